//! Statements over a batch of rows, each with a text that does not depend on
//! the batch's size where the database allows it.
//!
//! Every statement text a connection runs stays in its statement cache, and
//! PostgreSQL plans each text once: a batch's statements therefore have one
//! text whatever its size where the database can take a list as one parameter
//! (PostgreSQL's arrays and jsonb), and a handful of texts otherwise (SQLite:
//! lists padded, inserts chunked, to powers of two).

use std::fmt::Write as _;

use sea_orm::{ActiveModelTrait, ConnectionTrait, DbBackend, EntityTrait, IntoActiveModel};

/// The `n`th (from 1) parameter of a statement, in the backend's spelling.
pub fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}

/// `(…), (…)`: `rows` tuples of `columns` parameters each, numbered in
/// order, for a hand-written multi-row `INSERT … VALUES`.
pub fn value_rows(backend: DbBackend, rows: usize, columns: usize) -> String {
    let mut sql = String::with_capacity(rows * columns * 5);
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            // Written in place: the click writer builds one per batch.
            match backend {
                DbBackend::Postgres => {
                    let _ = write!(sql, "${}", r * columns + c + 1);
                }
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
    sql
}

/// Inserts a fully built row.
pub async fn insert<M, A, C>(db: &C, model: M) -> Result<M, sea_orm::DbErr>
where
    M: IntoActiveModel<A> + Clone,
    A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    C: ConnectionTrait,
{
    let am = model.clone().into_active_model().reset_all();
    <A::Entity as EntityTrait>::insert(am)
        .exec_without_returning(db)
        .await?;
    Ok(model)
}

/// The value of a batch's row in an UPDATE of many rows, each with a value of
/// its own: `values` maps each row's `id` to its value.
///
/// On PostgreSQL the values are one JSON object looked up by the row's key
/// (`($1 ->> "t"."id")::type`, `$1` a jsonb parameter): one parameter and one
/// statement text whatever the batch's size, each row's lookup a binary search. A
/// `CASE WHEN id = … THEN …` of one arm per row (what SQLite gets, whose
/// statements cost nothing to plan) made PostgreSQL plan an expression of
/// hundreds of parameters and compare every row with every arm.
pub fn per_row<C, S, V>(
    backend: DbBackend,
    id: C,
    values: impl IntoIterator<Item = (S, V)>,
) -> sea_orm::sea_query::SimpleExpr
where
    C: sea_orm::ColumnTrait,
    S: AsRef<str>,
    V: Into<sea_orm::Value>,
{
    use sea_orm::sea_query::{CaseStatement, Expr};
    let values: Vec<(String, sea_orm::Value)> = values
        .into_iter()
        .map(|(row, value)| (row.as_ref().to_owned(), value.into()))
        .collect();
    if backend == DbBackend::Postgres
        && let Some(expr) = jsonb_lookup(id, &values)
    {
        return expr;
    }
    let mut case = CaseStatement::new();
    // Padded like `IN` lists (see `padded`): a repeated last arm changes nothing.
    for (row, value) in padded(values) {
        case = case.case(id.eq(row), Expr::val(value));
    }
    case.into()
}

/// `per_row` on PostgreSQL; `None` for a kind of value it has no cast for.
fn jsonb_lookup<C: sea_orm::ColumnTrait>(
    id: C,
    values: &[(String, sea_orm::Value)],
) -> Option<sea_orm::sea_query::SimpleExpr> {
    use sea_orm::Value as V;
    use sea_orm::sea_query::Expr;
    let cast = match values.first().map(|(_, v)| v)? {
        V::String(_) => "",
        V::Int(_) => "::integer",
        V::BigInt(_) => "::bigint",
        V::Bool(_) => "::boolean",
        V::ChronoDateTimeUtc(_) => "::timestamptz",
        _ => return None,
    };
    let mut object = serde_json::Map::with_capacity(values.len());
    for (row, value) in values {
        let json = match value {
            V::String(s) => s.as_ref().map(|s| serde_json::Value::from(s.as_str())),
            V::Int(i) => i.map(serde_json::Value::from),
            V::BigInt(i) => i.map(serde_json::Value::from),
            V::Bool(b) => b.map(serde_json::Value::from),
            V::ChronoDateTimeUtc(t) => t.as_ref().map(|t| {
                serde_json::Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            }),
            _ => return None,
        };
        object.insert(row.clone(), json.unwrap_or(serde_json::Value::Null));
    }
    // A parameter of type jsonb (not text cast in the statement, which a
    // generic plan would parse again for every row).
    Some(Expr::cust_with_exprs(
        format!("($1 ->> $2){cast}"),
        [
            Expr::val(serde_json::Value::Object(object)),
            Expr::col((id.entity_name(), id)),
        ],
    ))
}

/// `column IN (ids)` for a batch. On PostgreSQL, `column = ANY($1)` with one
/// text[] parameter: one statement text whatever the batch's size. On SQLite,
/// an `IN` list padded to a power of two (see `padded`).
pub fn among<C, S>(
    backend: DbBackend,
    column: C,
    ids: impl IntoIterator<Item = S>,
) -> sea_orm::sea_query::SimpleExpr
where
    C: sea_orm::ColumnTrait,
    S: Into<String>,
{
    use sea_orm::sea_query::Expr;
    if backend == DbBackend::Postgres {
        // A parameter of type text[] (not text cast in the statement, which a
        // generic plan would parse again wherever it is not an index's key).
        let ids: Vec<sea_orm::Value> = ids.into_iter().map(|id| id.into().into()).collect();
        return Expr::cust_with_exprs(
            "$1 = ANY($2)",
            [
                Expr::col((column.entity_name(), column)),
                Expr::val(sea_orm::Value::Array(
                    sea_orm::sea_query::ArrayType::String,
                    Some(Box::new(ids)),
                )),
            ],
        );
    }
    column.is_in(padded(ids.into_iter().map(Into::into)))
}

/// `items` with its last element repeated up to the next power of two. For
/// `IN (…)` lists and `CASE` arms over a batch: their statement's text depends
/// on the list's length, and each text a connection runs stays in its
/// statement cache (see `pow2_chunks`); repeats do not change what matches.
pub fn padded<T: Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut items: Vec<T> = items.into_iter().collect();
    if let Some(last) = items.last().cloned() {
        items.resize(items.len().next_power_of_two(), last);
    }
    items
}

/// Inserts `rows` with `ON CONFLICT (conflict) DO NOTHING`, in power-of-two
/// chunks (see `pow2_chunks`); returns the primary keys of the rows that were
/// new (the others were there already).
pub async fn insert_new<E, C>(
    db: &C,
    rows: &[E::Model],
    conflict: &[E::Column],
) -> Result<
    std::collections::HashSet<<E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType>,
    sea_orm::DbErr,
>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Clone,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    <E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType: std::hash::Hash + Eq,
    C: ConnectionTrait,
{
    let mut new = std::collections::HashSet::new();
    for chunk in pow2_chunks(rows, 256) {
        let models = chunk
            .iter()
            .map(|m| m.clone().into_active_model().reset_all());
        if let sea_orm::TryInsertResult::Inserted(keys) = E::insert_many(models)
            .on_conflict_do_nothing_on(conflict.iter().copied())
            .exec_with_returning_keys(db)
            .await?
        {
            new.extend(keys);
        }
    }
    Ok(new)
}

/// Splits `items` into chunks whose sizes are powers of two, largest first (at
/// most `max`, itself a power of two). A multi-row statement's text depends on
/// its row count, and every text a connection runs stays in its statement
/// cache: with these sizes a table's batches share a handful of statements
/// instead of one per batch size.
pub fn pow2_chunks<T>(items: &[T], max: usize) -> impl Iterator<Item = &[T]> {
    debug_assert!(max.is_power_of_two());
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let n = if rest.len() >= max {
            max
        } else {
            1 << (usize::BITS - 1 - rest.len().leading_zeros())
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        Some(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::{among, padded, per_row, pow2_chunks};
    use sea_orm::{DbBackend, EntityTrait, QueryFilter, QueryTrait};

    use crate::entities::postback;

    /// An UPDATE of `n` postbacks' states, each its own, as `backend` gets it.
    fn update(backend: DbBackend, n: usize) -> sea_orm::Statement {
        let ids: Vec<String> = (0..n).map(|i| format!("pb_{i}")).collect();
        postback::Entity::update_many()
            .col_expr(
                postback::Column::State,
                per_row(
                    backend,
                    postback::Column::Id,
                    ids.iter().map(|id| (id, "processed")),
                ),
            )
            .col_expr(
                postback::Column::Reason,
                per_row(
                    backend,
                    postback::Column::Id,
                    ids.iter().map(|id| (id, None::<String>)),
                ),
            )
            .filter(among(backend, postback::Column::Id, ids.iter().cloned()))
            .build(backend)
    }

    #[test]
    fn postgres_batches_of_any_size_share_one_statement() {
        let one = update(DbBackend::Postgres, 1);
        let many = update(DbBackend::Postgres, 50);
        assert_eq!(one.sql, many.sql);
        assert!(!many.sql.contains("CASE"), "{}", many.sql);
        // Two JSON objects and one array, whatever the batch's size.
        assert_eq!(many.values.map(|v| v.0.len()), Some(3));
    }

    #[test]
    fn sqlite_batches_are_padded_to_a_power_of_two() {
        let three = update(DbBackend::Sqlite, 3);
        let four = update(DbBackend::Sqlite, 4);
        assert_eq!(three.sql, four.sql);
        assert_ne!(three.sql, update(DbBackend::Sqlite, 5).sql);
        assert!(three.sql.contains("CASE"), "{}", three.sql);
    }

    #[test]
    fn padded_repeats_the_last_item_to_a_power_of_two() {
        assert_eq!(padded(Vec::<u8>::new()), Vec::<u8>::new());
        assert_eq!(padded([7]), vec![7]);
        assert_eq!(padded([1, 2, 3]), vec![1, 2, 3, 3]);
        assert_eq!(padded([1, 2, 3, 4]), vec![1, 2, 3, 4]);
        assert_eq!(padded(1..=5).len(), 8);
    }

    #[test]
    fn chunks_are_powers_of_two_and_cover_everything() {
        for n in 0..1_100 {
            let items: Vec<usize> = (0..n).collect();
            let chunks: Vec<&[usize]> = pow2_chunks(&items, 256).collect();
            assert!(
                chunks
                    .iter()
                    .all(|c| c.len().is_power_of_two() && c.len() <= 256)
            );
            assert_eq!(chunks.concat(), items);
        }
        let sizes: Vec<usize> = pow2_chunks(&[0u8; 700], 256).map(<[u8]>::len).collect();
        assert_eq!(sizes, [256, 256, 128, 32, 16, 8, 4]);
    }
}
