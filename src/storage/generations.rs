//! Generations: the records live in a series of tables, and new keys only ever go into the
//! newest, small one.
//!
//! Why: a fold writes every new key into a B-tree. In one table of millions of random keys,
//! almost every key lands on a leaf page of its own, so a fold wrote about 1.7 scattered
//! pages per record on a store of 5 M records, against 0.5 on a young one, and those writes
//! compete with the journal's syncs. Keys are random, so no order of writing helps; keeping
//! the table they land in small does. (Merging a young table into the large one later was
//! measured too: in key order it still cost about one page per record, so the work would
//! only move, not shrink.)
//!
//! So the records table is cut into generations. The newest, the *current* one, takes every
//! new key; once it holds about `generation_keys` records it is *sealed* and a new one
//! starts. A key lives in exactly one generation: a later change to it (a completion, a
//! sweep's deletion) is written where it is. A sealed generation left empty by sweeps is
//! dropped whole. Each generation has a [`KeyFilter`] in memory, persisted when it is
//! sealed, so looking up a key no generation holds (every fresh claim) costs a few
//! cache-line reads rather than a descent into every tree.
//!
//! The expiry index stays one table: its entries name keys, not generations.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use parking_lot::RwLock;
use redb::{
    ReadOnlyTable, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table,
    TableDefinition, TableError, TableHandle, WriteTransaction,
};

use crate::error::{Error, Result};
use crate::storage::key_filter::{KeyFilter, Probe};

/// Generation id → its state: a version byte, then the persisted filter once sealed.
pub(crate) const GENERATIONS: TableDefinition<u64, &[u8]> =
    TableDefinition::new("idemdb_generations");

/// The default records per generation before a new one starts.
pub(crate) const DEFAULT_GENERATION_KEYS: usize = 200_000;

const ROW_FORMAT: u8 = 1;

/// The table of generation `id`. Generation 0 is the records table of stores written before
/// generations, so those open with their records where they were.
pub(crate) fn table_name(id: u64) -> String {
    if id == 0 {
        "idemdb_records".to_owned()
    } else {
        format!("idemdb_records.{id}")
    }
}

fn definition(name: &str) -> TableDefinition<'_, &'static [u8], &'static [u8]> {
    TableDefinition::new(name)
}

/// The row of a generation: `None` filter bytes for the current one.
fn encode_row(filter: Option<&KeyFilter>) -> Vec<u8> {
    match filter {
        None => vec![ROW_FORMAT],
        Some(filter) => {
            let mut row = vec![ROW_FORMAT];
            row.extend_from_slice(&filter.to_bytes());
            row
        }
    }
}

/// One generation as listed: id, and whether it is sealed with the persisted filter's
/// bytes if they were asked for (`Some(empty)` otherwise).
type Row = (u64, Option<Vec<u8>>);

/// The generations in id order. Filter bytes are copied only `with_filters`: views and folds
/// open often and need only the ids.
fn read_rows(
    table: &impl ReadableTable<u64, &'static [u8]>,
    with_filters: bool,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for entry in table.iter().map_err(Error::from_redb)? {
        let (id, state) = entry.map_err(Error::from_redb)?;
        let state = state.value();
        match state.split_first() {
            Some((&ROW_FORMAT, rest)) => {
                let filter = match (rest.is_empty(), with_filters) {
                    (true, _) => None,
                    (false, true) => Some(rest.to_vec()),
                    (false, false) => Some(Vec::new()),
                };
                rows.push((id.value(), filter))
            }
            _ => {
                return Err(Error::Corrupt {
                    detail: format!("the state of record generation {} is malformed", id.value()),
                });
            }
        }
    }
    Ok(rows)
}

/// The generations `read` sees (see [`read_rows`]). A store not migrated yet (see
/// `tables::check_or_init`) has only generation 0, unsealed.
fn listed(read: &ReadTransaction, with_filters: bool) -> Result<Vec<Row>> {
    match read.open_table(GENERATIONS) {
        Ok(table) => read_rows(&table, with_filters),
        Err(TableError::TableDoesNotExist(_)) => Ok(vec![(0, None)]),
        Err(e) => Err(Error::from_redb(e)),
    }
}

/// The ids of the generations `read` sees, from the names of their tables: unlike the
/// generations table, whose rows carry the sealed generations' filters, listing tables
/// reads no filter bytes. A generation's row and table are created and dropped together.
fn generation_ids(read: &ReadTransaction) -> Result<Vec<u64>> {
    let mut ids: Vec<u64> = read
        .list_tables()
        .map_err(Error::from_redb)?
        .filter_map(|table| generation_of(table.name()))
        .collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The generation whose table is called `name`, if it is one (see [`table_name`]).
fn generation_of(name: &str) -> Option<u64> {
    if name == table_name(0) {
        return Some(0);
    }
    name.strip_prefix("idemdb_records.")?.parse().ok()
}

/// Creates the generations table, with generation 0 current, if the store has none (a new
/// store, or one from before generations).
pub(crate) fn ensure_table(write: &WriteTransaction) -> Result<()> {
    let mut rows = write.open_table(GENERATIONS).map_err(Error::from_redb)?;
    if rows.is_empty().map_err(Error::from_redb)? {
        write
            .open_table(definition(&table_name(0)))
            .map_err(Error::from_redb)?;
        rows.insert(0, encode_row(None).as_slice())
            .map_err(Error::from_redb)?;
    }
    Ok(())
}

/// The filters of the live generations, shared by readers and folds.
pub(crate) struct Filters {
    map: RwLock<HashMap<u64, Arc<KeyFilter>>>,
    /// Generations loaded without a filter: the current one, whose filter is built only
    /// when it is sealed (reads search it without one meanwhile), so that an open does not
    /// read every key it holds.
    unfiltered: RwLock<Vec<u64>>,
    generation_keys: usize,
}

impl Filters {
    /// Loads the filters of the generations one read transaction sees: a sealed one's from
    /// its row, the current one's (and any that does not decode) by reading its keys.
    pub(crate) fn load_from(read: &ReadTransaction, generation_keys: usize) -> Result<Filters> {
        Filters::load_rows(read, generation_keys, true)
    }

    /// The filters of the sealed generations only: the current one is searched without a
    /// filter until a fold seals it (which builds it then). Opening costs no read of the
    /// current generation's keys.
    pub(crate) fn load_sealed(
        db: &impl ReadableDatabase,
        generation_keys: usize,
    ) -> Result<Filters> {
        let read = db.begin_read().map_err(Error::from_redb)?;
        Filters::load_rows(&read, generation_keys, false)
    }

    /// No filter at all: every generation is searched without one. For a short process,
    /// which looks up a key or two: reading the sealed generations' filters would cost
    /// more than searching each generation's table once.
    pub(crate) fn load_none(db: &impl ReadableDatabase, generation_keys: usize) -> Result<Filters> {
        let read = db.begin_read().map_err(Error::from_redb)?;
        let ids = generation_ids(&read)?;
        Ok(Filters {
            map: RwLock::new(HashMap::new()),
            unfiltered: RwLock::new(ids),
            generation_keys: generation_keys.max(1),
        })
    }

    /// No filter and no generation listed: every generation a view opens is searched
    /// without one. For a read-only store, whose few lookups do not repay reading filters.
    pub(crate) fn none() -> Filters {
        Filters {
            map: RwLock::new(HashMap::new()),
            unfiltered: RwLock::new(Vec::new()),
            generation_keys: 1,
        }
    }

    fn load_rows(
        read: &ReadTransaction,
        generation_keys: usize,
        build_current: bool,
    ) -> Result<Filters> {
        let rows = listed(read, true)?;
        let mut map = HashMap::new();
        let mut unfiltered = Vec::new();
        for (id, bytes) in rows {
            let filter = match bytes.as_deref().map(KeyFilter::from_bytes) {
                Some(Some(filter)) => filter,
                None if !build_current => {
                    unfiltered.push(id);
                    continue;
                }
                decoded => {
                    if decoded.is_some() {
                        tracing::warn!(generation = id, "rebuilding an unreadable key filter");
                    }
                    build_filter(read, id, generation_keys)?
                }
            };
            map.insert(id, Arc::new(filter));
        }
        Ok(Filters {
            map: RwLock::new(map),
            unfiltered: RwLock::new(unfiltered),
            generation_keys: generation_keys.max(1),
        })
    }

    fn get(&self, id: u64) -> Option<Arc<KeyFilter>> {
        self.map.read().get(&id).cloned()
    }

    /// How many generations have a filter: the live ones, plus, after a failed fold, one
    /// it had started (until a fold succeeds).
    pub(crate) fn count(&self) -> usize {
        let map = self.map.read();
        let unfiltered = self.unfiltered.read();
        map.len() + unfiltered.iter().filter(|id| !map.contains_key(id)).count()
    }
}

/// A filter of every key generation `id` holds.
fn build_filter(read: &ReadTransaction, id: u64, generation_keys: usize) -> Result<KeyFilter> {
    match read.open_table(definition(&table_name(id))) {
        Ok(table) => filter_of(&table, generation_keys),
        Err(TableError::TableDoesNotExist(_)) => Ok(KeyFilter::with_capacity(0)),
        Err(e) => Err(Error::from_redb(e)),
    }
}

/// A stored key and its record's bytes.
pub(crate) type StoredRow = (Vec<u8>, Vec<u8>);

type RecordsTable = ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The generations of one read transaction, newest first: reads see one consistent state.
pub(crate) struct RecordsView {
    gens: Vec<(u64, Option<Arc<KeyFilter>>, RecordsTable)>,
}

impl RecordsView {
    /// Opens every generation of `read`. A generation without a filter (dropped since the
    /// snapshot, say) is searched without one.
    pub(crate) fn open(read: &ReadTransaction, filters: &Filters) -> Result<RecordsView> {
        let ids = generation_ids(read)?;
        let mut gens = Vec::with_capacity(ids.len());
        for id in ids.into_iter().rev() {
            let table =
                read.open_table(definition(&table_name(id)))
                    .map_err(|e| Error::Corrupt {
                        detail: format!("record generation {id} is unreadable: {e}"),
                    })?;
            gens.push((id, filters.get(id), table));
        }
        Ok(RecordsView { gens })
    }

    /// The tables that may hold `key`, newest first: those whose filter does not rule it out.
    fn candidates<'v>(&'v self, key: &[u8]) -> impl Iterator<Item = &'v RecordsTable> {
        let probe = Probe::of(key);
        self.gens
            .iter()
            .filter(move |(_, filter, _)| filter.as_ref().is_none_or(|f| f.may_contain(&probe)))
            .map(|(_, _, table)| table)
    }

    /// The stored bytes of `key`, from the generation that holds it.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        for table in self.candidates(key) {
            if let Some(value) = table.get(key).map_err(Error::from_redb)? {
                return Ok(Some(value.value().to_vec()));
            }
        }
        Ok(None)
    }

    /// Whether generation `id`'s filter holds `key` (`true` without a filter): a key its
    /// own generation's filter lacks would be missed by lookups.
    pub(crate) fn filter_holds(&self, id: u64, key: &[u8]) -> bool {
        let probe = Probe::of(key);
        self.gens
            .iter()
            .find(|(g, _, _)| *g == id)
            .and_then(|(_, filter, _)| filter.as_ref())
            .is_none_or(|filter| filter.may_contain(&probe))
    }

    /// How many generations hold `key` (more than one is damage: see `maintenance::check`).
    pub(crate) fn holders(&self, key: &[u8]) -> Result<usize> {
        let mut n = 0;
        for table in self.candidates(key) {
            if table.get(key).map_err(Error::from_redb)?.is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Every generation's table, newest first.
    pub(crate) fn tables(&self) -> impl Iterator<Item = (u64, &RecordsTable)> {
        self.gens.iter().map(|(id, _, table)| (*id, table))
    }

    /// Stored rows with keys in `[start, end)`, in key order: up to `limit` of them, and
    /// the first key a following page must start at (`None`: the range is exhausted). The
    /// generations are merged as they are read, so a page reads about `limit` rows however
    /// many generations there are.
    pub(crate) fn page(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<StoredRow>, Option<Vec<u8>>)> {
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let mut ranges = Vec::with_capacity(self.gens.len());
        for (_, _, table) in &self.gens {
            ranges.push(
                table
                    .range::<&[u8]>((Bound::Included(start), upper))
                    .map_err(Error::from_redb)?,
            );
        }
        let next_row = |range: &mut redb::Range<'static, &'static [u8], &'static [u8]>| {
            range
                .next()
                .transpose()
                .map_err(Error::from_redb)
                .map(|row| row.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())))
        };
        // The smallest unread row of each generation.
        let mut heads = Vec::with_capacity(ranges.len());
        for range in &mut ranges {
            heads.push(next_row(range)?);
        }
        let mut rows: Vec<StoredRow> = Vec::new();
        loop {
            let smallest = heads
                .iter()
                .enumerate()
                .filter_map(|(i, head)| head.as_ref().map(|(k, _)| (i, k)))
                .min_by(|a, b| a.1.cmp(b.1))
                .map(|(i, _)| i);
            let Some(i) = smallest else {
                return Ok((rows, None));
            };
            if rows.len() >= limit.max(1) {
                let next = rows.last().map(|(k, _)| [k.as_slice(), &[0]].concat());
                return Ok((rows, next));
            }
            let refill = next_row(&mut ranges[i])?;
            if let Some(row) = std::mem::replace(&mut heads[i], refill) {
                rows.push(row);
            }
        }
    }
}

struct WriteGen<'t> {
    id: u64,
    table: Table<'t, &'static [u8], &'static [u8]>,
    filter: Option<Arc<KeyFilter>>,
    /// A record was removed from it: it may now be empty.
    shrank: bool,
}

/// The generations inside a fold's write transaction.
pub(crate) struct GenerationsWriter<'t> {
    write: &'t WriteTransaction,
    rows: Table<'t, u64, &'static [u8]>,
    /// Newest (current) first.
    gens: Vec<WriteGen<'t>>,
    filters: &'t Filters,
}

impl<'t> GenerationsWriter<'t> {
    /// Opens the generations for a fold of about `incoming` changes: if the current
    /// generation would grow past its size, it is sealed first and a new one started.
    pub(crate) fn open(
        write: &'t WriteTransaction,
        filters: &'t Filters,
        incoming: usize,
    ) -> Result<GenerationsWriter<'t>> {
        ensure_table(write)?;
        let mut rows = write.open_table(GENERATIONS).map_err(Error::from_redb)?;
        let listed = read_rows(&rows, false)?;
        let mut gens = Vec::with_capacity(listed.len() + 1);
        for (id, _) in listed.iter().rev() {
            let table = write
                .open_table(definition(&table_name(*id)))
                .map_err(Error::from_redb)?;
            gens.push(WriteGen {
                id: *id,
                table,
                filter: filters.get(*id),
                shrank: false,
            });
        }
        let keys = filters.generation_keys;
        let current_len = match gens.first() {
            Some(current) => current.table.len().map_err(Error::from_redb)?,
            None => 0,
        };
        let current_len = usize::try_from(current_len).unwrap_or(usize::MAX);
        let current_sealed = listed.last().is_some_and(|(_, bytes)| bytes.is_some());
        // Sealed once at least half full if this fold could fill it: `incoming` counts every
        // change, and a fold of mostly deletions (a sweep's) must not seal a generation that
        // has room. The filter is sized for the whole generation, so it stays near its
        // false-positive rate even when a large fold lands in a half-full one.
        if gens.is_empty()
            || current_sealed
            || (current_len >= keys.div_ceil(2) && current_len.saturating_add(incoming) > keys)
        {
            if let Some(current) = gens.first_mut()
                && !current_sealed
            {
                let filter = match &current.filter {
                    Some(filter) => Arc::clone(filter),
                    None => {
                        let filter = Arc::new(filter_of(&current.table, keys)?);
                        filters.map.write().insert(current.id, Arc::clone(&filter));
                        current.filter = Some(Arc::clone(&filter));
                        filter
                    }
                };
                rows.insert(current.id, encode_row(Some(&filter)).as_slice())
                    .map_err(Error::from_redb)?;
            }
            let id = match listed.last() {
                None => 0,
                Some((last, _)) => last.checked_add(1).ok_or_else(|| Error::Corrupt {
                    detail: "the record generations have run out of ids".to_owned(),
                })?,
            };
            rows.insert(id, encode_row(None).as_slice())
                .map_err(Error::from_redb)?;
            let table = write
                .open_table(definition(&table_name(id)))
                .map_err(Error::from_redb)?;
            // Inserted before the commit: a snapshot that can see the new generation's keys
            // already finds their bits (a filter never forgets a key, so a failed fold only
            // leaves it a little fuller). The bits are set with relaxed stores; they are
            // visible to a reader of the commit because redb's commit and `begin_read` both
            // take the database's state lock, which orders everything before the commit
            // ahead of every later read transaction.
            let filter = Arc::new(KeyFilter::with_capacity(keys.max(incoming)));
            filters.map.write().insert(id, Arc::clone(&filter));
            gens.insert(
                0,
                WriteGen {
                    id,
                    table,
                    filter: Some(filter),
                    shrank: false,
                },
            );
        }
        Ok(GenerationsWriter {
            write,
            rows,
            gens,
            filters,
        })
    }

    /// The generation holding `key`, as an index into `gens`.
    fn holder(&self, key: &[u8], probe: &Probe) -> Result<Option<usize>> {
        for (i, slot) in self.gens.iter().enumerate() {
            if slot.filter.as_ref().is_some_and(|f| !f.may_contain(probe)) {
                continue;
            }
            if slot.table.get(key).map_err(Error::from_redb)?.is_some() {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }

    /// Writes `value` under `key` where the key lives, or in the current generation if it
    /// is new; returns the bytes it replaced.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        let probe = Probe::of(key);
        let i = match self.holder(key, &probe)? {
            Some(i) => i,
            None => {
                // The bits go in before the write: see `open`.
                if let Some(filter) = &self.gens[0].filter {
                    filter.insert(&probe);
                }
                0
            }
        };
        let old = self.gens[i]
            .table
            .insert(key, value)
            .map_err(Error::from_redb)?;
        Ok(old.map(|old| old.value().to_vec()))
    }

    /// Removes `key` from the generation holding it; returns the bytes removed.
    pub(crate) fn remove(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let probe = Probe::of(key);
        let Some(i) = self.holder(key, &probe)? else {
            return Ok(None);
        };
        let slot = &mut self.gens[i];
        slot.shrank = true;
        let old = slot.table.remove(key).map_err(Error::from_redb)?;
        Ok(old.map(|old| old.value().to_vec()))
    }

    /// Drops the sealed generations this fold emptied, with their filters.
    pub(crate) fn finish(mut self) -> Result<()> {
        let mut emptied = Vec::new();
        for slot in self.gens.iter().skip(1) {
            if slot.shrank && slot.table.is_empty().map_err(Error::from_redb)? {
                emptied.push(slot.id);
            }
        }
        self.gens.retain(|slot| !emptied.contains(&slot.id));
        drop(self.gens);
        for id in emptied {
            self.write
                .delete_table(definition(&table_name(id)))
                .map_err(Error::from_redb)?;
            self.rows.remove(id).map_err(Error::from_redb)?;
            // A reader with an older snapshot searches that generation without a filter.
            self.filters.map.write().remove(&id);
            self.filters.unfiltered.write().retain(|&u| u != id);
        }
        Ok(())
    }
}

/// A filter of every key in `table`, sized for at least `generation_keys`.
fn filter_of(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    generation_keys: usize,
) -> Result<KeyFilter> {
    let len = usize::try_from(table.len().map_err(Error::from_redb)?).unwrap_or(usize::MAX);
    let filter = KeyFilter::with_capacity(len.max(generation_keys));
    for entry in table.iter().map_err(Error::from_redb)? {
        let (key, _) = entry.map_err(Error::from_redb)?;
        filter.insert(&Probe::of(key.value()));
    }
    Ok(filter)
}
