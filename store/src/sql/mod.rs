//! The two backends as one generic [`SqlStore`] over sqlx's [`Database`].
//!
//! The SQL is the same for both dialects: runtime queries with `$N`
//! placeholders (SQLite reads them as named parameters numbered in order
//! of appearance), and the queries whose text varies (filters, batches)
//! are written by [`Sql`], which writes each dialect's placeholders as
//! values are added. What does differ is a [`Backend`]: how a writing
//! transaction begins, row locks, SQLite's one-row JSON page; the schema
//! differs too and lives in
//! `migrations/`.
//!
//! The code is by aggregate: each module implements one of the store's
//! traits for [`SqlStore`] (`groups`: [`crate::GroupStore`], `key_servers`,
//! `gms` (the GM database), `health` (reports and the D3P error series),
//! `rekeys`, `audit`, `auth` (API and agent tokens), `enroll` (setup keys
//! and enrolled agents) and `secrets`), with
//! the row decoding and in-transaction helpers it shares beside it.
//!
//! Why the small layer below ([`Bind`], [`Column`], [`Exec`] and the
//! [`Args`], [`Run`], [`Col`] methods) instead of sqlx's own `bind`,
//! `fetch_*` and `try_get`: those need bounds such as
//! `for<'q> i64: Encode<'q, DB>` and
//! `for<'c> &'c mut DB::Connection: Executor<'c>`, and Rust does not carry
//! a trait's `where` clauses to the code that uses the trait, so every
//! generic block would restate a dozen of them. Supertraits *are* carried:
//! [`Backend`] lists each capability as one, each with a blanket impl
//! over sqlx's own bounds, so `DB: Backend` is the only bound anywhere.

mod audit;
mod auth;
mod enroll;
mod gms;
mod groups;
mod health;
mod key_servers;
mod postgres;
mod rekeys;
mod secrets;
mod sqlite;

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;

use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use crate::seal::MasterKey;
use crate::{BackendKind, Result, Store, StoreError};

pub use postgres::open as open_postgres;
pub use sqlite::open as open_sqlite;

/// A statement with its arguments, in a dialect.
type Q<'q, DB> = Query<'q, DB, <DB as Database>::Arguments<'q>>;

/// A database call's future.
type DbFuture<'e, T> =
    Pin<Box<dyn Future<Output = core::result::Result<T, sqlx::Error>> + Send + 'e>>;

/// The dialect binds `T` as a statement argument.
pub trait Bind<'q, T>: Database {
    /// `q` with `v` as its next argument.
    fn bind_to(q: Q<'q, Self>, v: T) -> Q<'q, Self>;
}

impl<'q, DB: Database, T> Bind<'q, T> for DB
where
    T: 'q + Encode<'q, DB> + Type<DB>,
{
    fn bind_to(q: Q<'q, Self>, v: T) -> Q<'q, Self> {
        q.bind(v)
    }
}

/// The dialect reads a column as `T`.
pub trait Column<T>: Database {
    /// Column `name` of `r`.
    fn column(r: &Self::Row, name: &str) -> core::result::Result<T, sqlx::Error>;
}

impl<DB: Database, T> Column<T> for DB
where
    T: for<'r> Decode<'r, DB> + Type<DB>,
    for<'n> &'n str: ColumnIndex<DB::Row>,
{
    fn column(r: &Self::Row, name: &str) -> core::result::Result<T, sqlx::Error> {
        r.try_get(name)
    }
}

/// The dialect runs statements on a connection (or a transaction's).
pub trait Exec: Database {
    /// Runs `q`.
    fn execute<'e, 'q: 'e>(
        q: Q<'q, Self>,
        c: &'e mut Self::Connection,
    ) -> DbFuture<'e, Self::QueryResult>;
    /// Runs `q`: all its rows.
    fn fetch_all<'e, 'q: 'e>(
        q: Q<'q, Self>,
        c: &'e mut Self::Connection,
    ) -> DbFuture<'e, Vec<Self::Row>>;
    /// Runs `q`: its first row, if any.
    fn fetch_optional<'e, 'q: 'e>(
        q: Q<'q, Self>,
        c: &'e mut Self::Connection,
    ) -> DbFuture<'e, Option<Self::Row>>;
}

impl<DB: Database> Exec for DB
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    fn execute<'e, 'q: 'e>(
        q: Q<'q, Self>,
        c: &'e mut Self::Connection,
    ) -> DbFuture<'e, Self::QueryResult> {
        Box::pin(q.execute(c))
    }
    fn fetch_all<'e, 'q: 'e>(
        q: Q<'q, Self>,
        c: &'e mut Self::Connection,
    ) -> DbFuture<'e, Vec<Self::Row>> {
        Box::pin(q.fetch_all(c))
    }
    fn fetch_optional<'e, 'q: 'e>(
        q: Q<'q, Self>,
        c: &'e mut Self::Connection,
    ) -> DbFuture<'e, Option<Self::Row>> {
        Box::pin(q.fetch_optional(c))
    }
}

/// What differs between the dialects beyond the schema, and (as
/// supertraits) every value type the store binds and reads.
pub trait Backend:
    Exec
    + for<'q> Bind<'q, i64>
    + for<'q> Bind<'q, Option<i64>>
    + for<'q> Bind<'q, bool>
    + for<'q> Bind<'q, String>
    + for<'q> Bind<'q, &'q str>
    + for<'q> Bind<'q, Option<&'q str>>
    + for<'q> Bind<'q, Vec<u8>>
    + for<'q> Bind<'q, &'q [u8]>
    + Column<i64>
    + Column<Option<i64>>
    + Column<bool>
    + Column<String>
    + Column<Option<String>>
    + Column<Vec<u8>>
{
    /// Which backend this is.
    const KIND: BackendKind;
    /// How every transaction here begins (each one writes).
    const BEGIN: &'static str;
    /// The row lock a read-then-write takes, appended to its `SELECT`
    /// (none on SQLite, whose `BEGIN IMMEDIATE` holds the write lock).
    const FOR_UPDATE: &'static str;
    /// Where a GM page comes back as one JSON value, the `SELECT` that
    /// wraps the page's query (see `gms.rs`).
    const JSON_PAGE: Option<&'static str>;
    /// Whether [`Sql`] numbers its placeholders (`$N`) or writes `?`:
    /// SQLite looks a numbered parameter's name up in a list as long as
    /// the statement's parameters, which made a 2,400-argument upsert
    /// spend most of its time in `sqlite3_bind_parameter_name` (perf).
    const NUMBERED: bool;
    /// Rows a statement changed.
    fn rows_affected(r: &Self::QueryResult) -> u64;
}

/// Arguments, in order: `.arg(v)` is sqlx's `.bind(v)`.
pub trait Args<'q, DB: Database>: Sized {
    /// The statement with `v` as its next argument.
    fn arg<T>(self, v: T) -> Self
    where
        DB: Bind<'q, T>;
}

impl<'q, DB: Database> Args<'q, DB> for Q<'q, DB> {
    fn arg<T>(self, v: T) -> Self
    where
        DB: Bind<'q, T>,
    {
        DB::bind_to(self, v)
    }
}

/// Running a statement: sqlx's `execute`, `fetch_all`, `fetch_optional`
/// and `fetch_one` on a connection.
pub trait Run<'q, DB: Exec>: Sized {
    /// Runs it; the rows changed.
    fn run<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, DB::QueryResult>
    where
        'q: 'e;
    /// Runs it; all rows.
    fn all<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, Vec<DB::Row>>
    where
        'q: 'e;
    /// Runs it; the first row, if any.
    fn optional<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, Option<DB::Row>>
    where
        'q: 'e;
    /// Runs it; the first row, which must exist.
    fn one<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, DB::Row>
    where
        'q: 'e,
        Self: Send + 'e,
    {
        let rows = self.optional(c);
        Box::pin(async move { rows.await?.ok_or(sqlx::Error::RowNotFound) })
    }
}

impl<'q, DB: Exec> Run<'q, DB> for Q<'q, DB> {
    fn run<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, DB::QueryResult>
    where
        'q: 'e,
    {
        DB::execute(self, c)
    }
    fn all<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, Vec<DB::Row>>
    where
        'q: 'e,
    {
        DB::fetch_all(self, c)
    }
    fn optional<'e>(self, c: &'e mut DB::Connection) -> DbFuture<'e, Option<DB::Row>>
    where
        'q: 'e,
    {
        DB::fetch_optional(self, c)
    }
}

/// Reading a row's column: `.col("name")` is sqlx's `.try_get("name")`.
pub trait Col: Row {
    /// Column `name`.
    fn col<T>(&self, name: &str) -> core::result::Result<T, sqlx::Error>
    where
        Self::Database: Column<T>;
}

impl<R: Row> Col for R {
    fn col<T>(&self, name: &str) -> core::result::Result<T, sqlx::Error>
    where
        R::Database: Column<T>,
    {
        <R::Database as Column<T>>::column(self, name)
    }
}

/// The store over one database.
pub struct SqlStore<DB: Database> {
    pool: Pool<DB>,
    master: MasterKey,
    tokens: auth::TokenCache,
    /// Bumped after every committed change to the GM database
    /// ([`crate::GmStore::gms_generation`]).
    gms_generation: std::sync::atomic::AtomicU64,
}

impl<DB: Database> SqlStore<DB> {
    fn new(pool: Pool<DB>, master: MasterKey) -> Self {
        Self {
            pool,
            master,
            tokens: auth::TokenCache::default(),
            gms_generation: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A statement in this store's dialect (sqlx's `query`).
    fn sql(text: &str) -> Q<'_, DB> {
        sqlx::query(text)
    }

    /// A connection from the pool, for a statement outside a transaction.
    async fn conn(&self) -> Result<PoolConnection<DB>> {
        Ok(self.pool.acquire().await?)
    }
}

/// One value of a [`Sql`] statement.
enum Value<'a> {
    Int(i64),
    Text(&'a str),
    MaybeInt(Option<i64>),
    MaybeText(Option<&'a str>),
}

/// A statement whose text depends on its filters: each value added writes
/// the next placeholder into the text (`$N`, or `?` where the dialect
/// prefers it).
struct Sql<'a> {
    text: String,
    binds: Vec<Value<'a>>,
    numbered: bool,
}

impl<'a> Sql<'a> {
    /// A statement in `DB`'s placeholders, starting with `text`.
    fn new<DB: Backend>(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            binds: Vec::new(),
            numbered: DB::NUMBERED,
        }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn placeholder(&mut self, b: Value<'a>) -> &mut Self {
        self.binds.push(b);
        if self.numbered {
            let _ = write!(self.text, "${}", self.binds.len());
        } else {
            self.text.push('?');
        }
        self
    }

    fn int(&mut self, v: i64) -> &mut Self {
        self.placeholder(Value::Int(v))
    }

    fn text(&mut self, v: &'a str) -> &mut Self {
        self.placeholder(Value::Text(v))
    }

    fn maybe_int(&mut self, v: Option<i64>) -> &mut Self {
        self.placeholder(Value::MaybeInt(v))
    }

    fn maybe_text(&mut self, v: Option<&'a str>) -> &mut Self {
        self.placeholder(Value::MaybeText(v))
    }

    /// The statement with its values bound, in order.
    fn query<DB: Backend>(&self) -> Q<'_, DB> {
        self.binds
            .iter()
            .fold(sqlx::query(&self.text), |q, b| match b {
                Value::Int(v) => q.arg(*v),
                Value::Text(v) => q.arg(*v),
                Value::MaybeInt(v) => q.arg(*v),
                Value::MaybeText(v) => q.arg(*v),
            })
    }
}

/// A database error, with unique violations as conflicts.
fn db(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("{what} already exists"))
        }
        _ => StoreError::Database(e),
    }
}

fn corrupt(what: impl Into<String>) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn u32_of(v: i64, what: &str) -> Result<u32> {
    u32::try_from(v).map_err(|_| corrupt(format!("{what} {v}")))
}

fn u64_of(v: i64, what: &str) -> Result<u64> {
    u64::try_from(v).map_err(|_| corrupt(format!("{what} {v}")))
}

impl<DB: Backend> Store for SqlStore<DB> {
    fn kind(&self) -> BackendKind {
        DB::KIND
    }
}
