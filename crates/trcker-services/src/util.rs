use chrono::{DateTime, Utc};
use sea_orm::{ActiveModelTrait, ConnectionTrait, EntityTrait, IntoActiveModel};
use trcker_storage::sea_orm;

use crate::ServiceResult;

pub fn now() -> DateTime<Utc> {
    Utc::now()
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

/// `CASE WHEN id = … THEN … END` over a batch of `(id, value)`: one UPDATE of
/// many rows, each with a value of its own.
pub fn per_row<C, S, V>(
    id: C,
    values: impl IntoIterator<Item = (S, V)>,
) -> sea_orm::sea_query::SimpleExpr
where
    C: sea_orm::ColumnTrait,
    S: AsRef<str>,
    V: Into<sea_orm::Value>,
{
    use sea_orm::sea_query::{CaseStatement, Expr};
    let mut case = CaseStatement::new();
    // Padded like `IN` lists (see `padded`): a repeated last arm changes nothing.
    let values: Vec<(String, sea_orm::Value)> = values
        .into_iter()
        .map(|(row, value)| (row.as_ref().to_owned(), value.into()))
        .collect();
    for (row, value) in padded(values) {
        case = case.case(id.eq(row), Expr::val(value));
    }
    case.into()
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
) -> Result<std::collections::HashSet<String>, sea_orm::DbErr>
where
    E: EntityTrait,
    E::Model: IntoActiveModel<E::ActiveModel> + Clone,
    E::ActiveModel: ActiveModelTrait<Entity = E> + Send,
    <E::PrimaryKey as sea_orm::PrimaryKeyTrait>::ValueType: Into<String>,
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
            new.extend(keys.into_iter().map(Into::into));
        }
    }
    Ok(new)
}

/// Parses a JSON column written by us.
pub fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> ServiceResult<T> {
    serde_json::from_str(s).map_err(|e| crate::ServiceError::Internal(format!("stored JSON: {e}")))
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
    use super::{padded, pow2_chunks};

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
