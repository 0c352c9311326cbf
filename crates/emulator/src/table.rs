//! The tenant's applications and service principals, found by id in O(1).
//!
//! A tenant of 100,000 applications is looked up on every request (the caller's principal, the
//! application a Graph call names, the resource a token names); a scan of the rows per lookup
//! made the emulator, not the daemon, the bottleneck of the scale benchmark.
//!
//! The index can never be used stale, because every way to change the rows goes through this
//! type: the `Vec` is private; `push` indexes the new row; `remove` and a mutable borrow of the
//! whole slice (`iter_mut()`, what tests use to edit a row) mark the index for a rebuild on the
//! next lookup; `table[i]` for writing (`IndexMut`, what the services use) notes the row, whose
//! ids the next lookup checks. A lookup also checks that the row it found still has the id it
//! was asked for. The index sits behind its own mutex so that a lookup through `&State` (all the
//! services hold) can repair it.
//!
//! Azure ids compare case-insensitively: keys are lower-cased (and a name's trailing `/` is
//! dropped, as Entra ignores it). Equal keys resolve to the first row, as the scan did.
//!
//! Serialised as the bare list, so `state.json` keeps its shape; the index is rebuilt on load.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut, Index as IndexOp, IndexMut};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What a row is found by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    /// The object id.
    Id,
    /// The application (client) id.
    AppId,
    /// A service principal name (a resource identifier a token's scope may use).
    Name,
    /// A name with a wildcard: matched by its owner, found through [`Table::having`].
    Pattern,
}

const KEYS: usize = 4;

/// A row's ids, as its table indexes them.
pub trait Keyed {
    /// Calls `each` with every key of the row.
    fn keys(&self, each: &mut dyn FnMut(Key, &str));
}

/// The canonical form of a key: lower case; a name without its trailing slashes.
fn normal(key: Key, value: &str) -> String {
    match key {
        Key::Name => value.trim_end_matches('/').to_ascii_lowercase(),
        Key::Id | Key::AppId | Key::Pattern => value.to_ascii_lowercase(),
    }
}

fn has_key<T: Keyed>(row: &T, key: Key, want: &str) -> bool {
    let mut found = false;
    row.keys(&mut |k, v| {
        found |= k == key && normal(k, v) == want;
    });
    found
}

#[derive(Default)]
struct Index {
    /// Rebuild before the next lookup.
    stale: bool,
    /// Rows borrowed mutably one at a time since the last lookup: their ids are checked then.
    touched: Vec<usize>,
    /// Per [`Key`], canonical key → the first row with it.
    maps: [HashMap<String, usize>; KEYS],
}

/// Beyond this many rows touched between two lookups, rebuilding is as cheap as checking.
const TOUCHED_LIMIT: usize = 64;

impl Index {
    fn build<T: Keyed>(rows: &[T]) -> Index {
        let mut index = Index::default();
        for (i, row) in rows.iter().enumerate() {
            index.add(i, row);
        }
        index
    }

    fn add<T: Keyed>(&mut self, i: usize, row: &T) {
        let maps = &mut self.maps;
        row.keys(&mut |k, v| {
            maps[k as usize].entry(normal(k, v)).or_insert(i);
        });
    }

    /// Whether every key of row `i` leads to row `i` (or to an earlier row with the same key).
    fn covers<T: Keyed>(&self, i: usize, row: &T) -> bool {
        let mut ok = true;
        row.keys(&mut |k, v| {
            ok &= self.maps[k as usize]
                .get(&normal(k, v))
                .is_some_and(|&j| j <= i);
        });
        ok
    }
}

/// Rows with an O(1) lookup by id that cannot go stale (see the module's documentation).
pub struct Table<T> {
    rows: Vec<T>,
    index: Mutex<Index>,
}

impl<T: Keyed> Table<T> {
    pub fn new() -> Table<T> {
        Table::from(Vec::new())
    }

    /// Appends a row.
    pub fn push(&mut self, row: T) {
        let i = self.rows.len();
        let index = self.index.get_mut().unwrap_or_else(PoisonError::into_inner);
        if !index.stale {
            index.add(i, &row);
        }
        self.rows.push(row);
    }

    /// Removes the row at `i`, shifting the later ones (so the index is rebuilt: removals are
    /// rare, lookups are not).
    pub fn remove(&mut self, i: usize) -> T {
        self.index
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .stale = true;
        self.rows.remove(i)
    }

    /// The index, brought up to date with the rows.
    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        let mut index = self.index.lock().unwrap_or_else(PoisonError::into_inner);
        let touched = std::mem::take(&mut index.touched);
        if !index.stale
            && !touched
                .iter()
                .all(|&i| self.rows.get(i).is_none_or(|r| index.covers(i, r)))
        {
            index.stale = true;
        }
        if index.stale {
            *index = Index::build(&self.rows);
        }
        index
    }

    /// The positions of the rows with a key of this kind, in order.
    pub fn having(&self, key: Key) -> Vec<usize> {
        let mut rows: Vec<usize> = self.index().maps[key as usize].values().copied().collect();
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// The position of the first row with this key, compared case-insensitively.
    pub fn position(&self, key: Key, value: &str) -> Option<usize> {
        let want = normal(key, value);
        let mut index = self.index();
        let found = index.maps[key as usize].get(&want).copied();
        match found {
            Some(i) if self.rows.get(i).is_some_and(|r| has_key(r, key, &want)) => Some(i),
            // The row lost that key through `table[i]` since it was indexed.
            Some(_) => {
                *index = Index::build(&self.rows);
                index.maps[key as usize].get(&want).copied()
            }
            None => None,
        }
    }

    /// The first row with this key.
    pub fn get_by(&self, key: Key, value: &str) -> Option<&T> {
        self.position(key, value).map(|i| &self.rows[i])
    }
}

impl<T: Keyed> Default for Table<T> {
    fn default() -> Self {
        Table::new()
    }
}

impl<T: Keyed> From<Vec<T>> for Table<T> {
    fn from(rows: Vec<T>) -> Self {
        let index = Mutex::new(Index::build(&rows));
        Table { rows, index }
    }
}

impl<T: Keyed> FromIterator<T> for Table<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Table::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: Clone> Clone for Table<T> {
    /// The copy builds its index when first asked (the control API's copies never ask).
    fn clone(&self) -> Self {
        Table {
            rows: self.rows.clone(),
            index: Mutex::new(Index {
                stale: true,
                ..Index::default()
            }),
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Table<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.rows.fmt(f)
    }
}

impl<T> Deref for Table<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.rows
    }
}

impl<T> DerefMut for Table<T> {
    /// Any row's ids may change through this borrow: the next lookup rebuilds the index.
    fn deref_mut(&mut self) -> &mut [T] {
        self.index
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .stale = true;
        &mut self.rows
    }
}

impl<T> IndexOp<usize> for Table<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        &self.rows[i]
    }
}

impl<T> IndexMut<usize> for Table<T> {
    /// Row `i`'s ids may change through this borrow: the next lookup checks them.
    fn index_mut(&mut self, i: usize) -> &mut T {
        let index = self.index.get_mut().unwrap_or_else(PoisonError::into_inner);
        if index.touched.len() < TOUCHED_LIMIT {
            if !index.touched.contains(&i) {
                index.touched.push(i);
            }
        } else {
            index.stale = true;
        }
        &mut self.rows[i]
    }
}

impl<'a, T> IntoIterator for &'a Table<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.rows.iter()
    }
}

impl<T: Serialize> Serialize for Table<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.rows.serialize(s)
    }
}

impl<'de, T: Keyed + Deserialize<'de>> Deserialize<'de> for Table<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Vec::<T>::deserialize(d).map(Table::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    struct Row {
        id: String,
        names: Vec<String>,
    }

    impl Keyed for Row {
        fn keys(&self, each: &mut dyn FnMut(Key, &str)) {
            each(Key::Id, &self.id);
            for n in &self.names {
                each(Key::Name, n);
            }
        }
    }

    fn row(id: &str, names: &[&str]) -> Row {
        Row {
            id: id.into(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn lookups_follow_pushes_removals_and_edits_in_any_case() {
        let mut t: Table<Row> = vec![row("A1", &["https://x/"]), row("b2", &[])].into();
        assert_eq!(t.position(Key::Id, "a1"), Some(0));
        assert_eq!(t.position(Key::Id, "B2"), Some(1));
        assert_eq!(
            t.position(Key::Name, "HTTPS://X"),
            Some(0),
            "trailing / ignored"
        );
        assert_eq!(t.position(Key::AppId, "a1"), None, "keys do not mix");

        t.push(row("c3", &["https://x"]));
        assert_eq!(t.position(Key::Id, "C3"), Some(2));
        assert_eq!(
            t.position(Key::Name, "https://x"),
            Some(0),
            "the first row wins"
        );

        assert_eq!(t.remove(0).id, "A1");
        assert_eq!(t.position(Key::Id, "a1"), None);
        assert_eq!(t.position(Key::Id, "c3"), Some(1), "shifted");
        assert_eq!(t.position(Key::Name, "https://x/"), Some(1));

        // An id changed through `table[i]` or through the slice is found under its new id only.
        t[1].id = "D4".into();
        assert_eq!(t.position(Key::Id, "c3"), None);
        assert_eq!(t.position(Key::Id, "d4"), Some(1));
        t.iter_mut().for_each(|r| r.id.make_ascii_uppercase());
        t.swap(0, 1);
        assert_eq!(t.position(Key::Id, "d4"), Some(0));
        assert_eq!(t.position(Key::Id, "b2"), Some(1));
        t[1].names.push("api://new".into());
        assert_eq!(t.position(Key::Name, "API://NEW"), Some(1));
    }

    #[test]
    fn a_table_is_stored_as_its_rows_and_indexed_again_when_read() {
        let t: Table<Row> = vec![row("A1", &[]), row("b2", &[])].into();
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"[{"id":"A1","names":[]},{"id":"b2","names":[]}]"#);
        let back: Table<Row> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.position(Key::Id, "B2"), Some(1));
        let copy = back.clone();
        assert_eq!(copy.position(Key::Id, "a1"), Some(0));
    }
}
