# Helpers shared by the bench scripts that use PostgreSQL (sourced, not run).
# The sourcing script sets $admin (an admin URL), $base (that URL without its
# database) and $work (a scratch directory), and calls drop_databases from
# its exit trap.

# The databases fresh_db made, dropped by drop_databases.
databases=()
seq_db=0

# Creates a fresh database named <$1>_<pid>_<n> and sets $db to its URL
# (not in a subshell: drop_databases must see it).
fresh_db() {
  seq_db=$((seq_db + 1))
  local name=$1_$$_$seq_db
  databases+=("$name")
  psql "$admin" -Atqc "CREATE DATABASE $name" >/dev/null
  db=$base/$name
}

# Drops the database of URL $1.
drop_db() {
  psql "$admin" -Atqc "DROP DATABASE IF EXISTS ${1##*/} WITH (FORCE)" >/dev/null
}

# Drops every database fresh_db made (best effort: for an exit trap).
drop_databases() {
  local d
  for d in "${databases[@]}"; do
    psql "$admin" -Atqc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1 || true
  done
}

now_us() { echo "${EPOCHREALTIME/./}"; }
# Runs a command with its output kept aside, shown only if it fails.
quiet() { "$@" >"$work/quiet.out" 2>&1 || { cat "$work/quiet.out" >&2; return 1; }; }
# The median of the numbers on stdin.
med() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
