//! Bounded line reading and result extraction (placeholder until implemented).
