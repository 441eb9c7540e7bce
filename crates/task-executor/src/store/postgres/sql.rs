//! How every statement with parameters reaches the server: as the unnamed
//! statement, so that nothing of it outlives the statement on the server
//! connection (PgBouncer in transaction mode works).
//!
//! tokio-postgres' `query`/`execute` with parameters and deadpool's
//! `prepare_cached` create *named* prepared statements (`s0`, `s1`, …) on
//! the connection. Behind PgBouncer in transaction mode a client's
//! consecutive transactions run on different server connections, where
//! such a name is unknown or taken (`prepared statement "s0" already
//! exists`; PgBouncer before 1.21 cannot map them). [`Sql`] sends Parse,
//! Bind, Describe, Execute and Sync of the unnamed statement in one batch
//! (`query_typed`): one round trip, where an uncached `query` took three.
//! The parameters' types, which a named prepare would ask the server for,
//! come from their Rust types ([`PgType`]), so [`p`] cannot declare one a
//! value does not encode as. Statements without parameters may use the
//! simple protocol (`batch_execute`), which names nothing either; so do
//! `BEGIN`/`COMMIT`. Clippy refuses the named methods (`clippy.toml`).

use std::borrow::Cow;
use std::future::Future;

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Error, Row};

/// A statement parameter with its PostgreSQL type.
pub(super) type Param<'a> = (&'a (dyn ToSql + Sync), Type);

/// The PostgreSQL type a Rust value is sent as.
pub(super) trait PgType {
    const TYPE: Type;
}

macro_rules! pg_types {
    ($($rust:ty => $pg:ident),* $(,)?) => {
        $(impl PgType for $rust {
            const TYPE: Type = Type::$pg;
        })*
    };
}

pg_types!(
    i64 => INT8,
    bool => BOOL,
    String => TEXT,
    &str => TEXT,
    Cow<'_, str> => TEXT,
    Vec<i64> => INT8_ARRAY,
    Vec<bool> => BOOL_ARRAY,
    Vec<String> => TEXT_ARRAY,
    Vec<&str> => TEXT_ARRAY,
    Vec<Option<i64>> => INT8_ARRAY,
    Vec<Option<String>> => TEXT_ARRAY,
);

/// `NULL` is sent as the type of the value it stands for.
impl<T: PgType> PgType for Option<T> {
    const TYPE: Type = T::TYPE;
}

/// `value` as a parameter of the type its Rust type maps to.
pub(super) fn p<T: PgType + ToSql + Sync>(value: &T) -> Param<'_> {
    (value, T::TYPE)
}

/// Running a statement as the unnamed one, on a pooled connection or in a
/// transaction.
pub(super) trait Sql: Sync {
    /// Every row `sql` returns.
    fn rows(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send;

    /// The one row `sql` returns (an error if it returns another number).
    fn one(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Row, Error>> + Send;

    /// The row `sql` returns, if any (an error if it returns several).
    fn opt(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send;

    /// How many rows `sql` wrote.
    fn exec(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<u64, Error>> + Send;
}

macro_rules! unnamed {
    ($($client:ty),*) => {
        $(impl Sql for $client {
            fn rows(
                &self,
                sql: &str,
                params: &[Param<'_>],
            ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send {
                self.query_typed(sql, params)
            }

            fn one(
                &self,
                sql: &str,
                params: &[Param<'_>],
            ) -> impl Future<Output = Result<Row, Error>> + Send {
                self.query_typed_one(sql, params)
            }

            fn opt(
                &self,
                sql: &str,
                params: &[Param<'_>],
            ) -> impl Future<Output = Result<Option<Row>, Error>> + Send {
                self.query_typed_opt(sql, params)
            }

            fn exec(
                &self,
                sql: &str,
                params: &[Param<'_>],
            ) -> impl Future<Output = Result<u64, Error>> + Send {
                self.execute_typed(sql, params)
            }
        })*
    };
}

unnamed!(
    deadpool_postgres::Object,
    deadpool_postgres::Transaction<'_>
);
