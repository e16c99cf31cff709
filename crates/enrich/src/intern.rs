//! Symbol tables: each distinct name (session id, hostname, …) is stored once, in one string
//! arena, and named everywhere else by a 4-byte [`Sym`]. A table also holds one value per name,
//! in a dense vector indexed by the symbol, so a lookup by symbol is an array access.
//!
//! Guarantees: a symbol names the same string and value until it is removed; a removed symbol's
//! slot is reused by a later name, so callers must drop every copy of a symbol before removing it
//! (the state does this with a mark-and-sweep, see `OwnershipState::evict_ended`). The bytes of
//! removed names are reclaimed by compacting the arena once they outweigh the live ones.
//!
//! Memory per name: its bytes, an 8-byte span and the value in the dense vector, and a 4-byte
//! entry plus a control byte in the hash index (at a load factor between 7/16 and 7/8).

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::num::NonZeroU32;

use hashbrown::HashTable;

/// A name in a [`SymbolTable<T>`]: 4 bytes, and `Option<Sym<T>>` too. The type parameter ties a
/// symbol to the table of its value type, so a session symbol cannot be looked up as a host.
pub(crate) struct Sym<T> {
    /// Slot index + 1.
    slot: NonZeroU32,
    table: PhantomData<fn() -> T>,
}

impl<T> Sym<T> {
    fn new(slot: u32) -> Self {
        let slot = NonZeroU32::new(slot.checked_add(1).expect("symbol table has more than 2^32 - 1 names")).expect("slot + 1 is not zero");
        Self { slot, table: PhantomData }
    }

    /// The dense index of this symbol, for side vectors (marks) sized by [`SymbolTable::slots`].
    pub(crate) fn index(self) -> usize {
        self.slot.get() as usize - 1
    }
}

impl<T> Clone for Sym<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Sym<T> {}

impl<T> PartialEq for Sym<T> {
    fn eq(&self, other: &Self) -> bool {
        self.slot == other.slot
    }
}

impl<T> Eq for Sym<T> {}

impl<T> Hash for Sym<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.slot.hash(state);
    }
}

impl<T> fmt::Debug for Sym<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sym({})", self.index())
    }
}

/// Where a slot's name lies in the arena. `len == FREE` marks a free slot.
#[derive(Debug, Clone)]
struct Slot<T> {
    start: u32,
    len: u32,
    value: T,
}

const FREE: u32 = u32::MAX;

/// Interned names with one value each, see the module documentation.
pub(crate) struct SymbolTable<T> {
    /// Every live name, back to back; removed names stay as dead bytes until compaction.
    arena: String,
    slots: Vec<Slot<T>>,
    /// Slot indexes, hashed by their name.
    index: HashTable<u32>,
    hasher: RandomState,
    /// Free slot indexes, reused before the vector grows.
    free: Vec<u32>,
    dead_bytes: usize,
}

impl<T> fmt::Debug for SymbolTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymbolTable").field("len", &self.len()).field("arena_bytes", &self.arena.len()).field("dead_bytes", &self.dead_bytes).finish()
    }
}

impl<T> Default for SymbolTable<T> {
    fn default() -> Self {
        Self { arena: String::new(), slots: Vec::new(), index: HashTable::new(), hasher: RandomState::new(), free: Vec::new(), dead_bytes: 0 }
    }
}

/// The name of slot `i`; a free function so that it can borrow the arena and slots while the
/// index is borrowed mutably.
fn name_of<'a, T>(arena: &'a str, slots: &[Slot<T>], i: u32) -> &'a str {
    let slot = &slots[i as usize];
    &arena[slot.start as usize..slot.start as usize + slot.len as usize]
}

impl<T> SymbolTable<T> {
    /// Live names.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// The size of the symbol space: every symbol's [`Sym::index`] is below it.
    pub(crate) fn slots(&self) -> usize {
        self.slots.len()
    }

    /// The symbol of `name`, if interned.
    pub(crate) fn get(&self, name: &str) -> Option<Sym<T>> {
        let hash = self.hasher.hash_one(name);
        self.index.find(hash, |&i| name_of(&self.arena, &self.slots, i) == name).map(|&i| Sym::new(i))
    }

    /// The name a symbol stands for.
    pub(crate) fn name(&self, sym: Sym<T>) -> &str {
        name_of(&self.arena, &self.slots, sym.index() as u32)
    }

    pub(crate) fn value(&self, sym: Sym<T>) -> &T {
        &self.slots[sym.index()].value
    }

    pub(crate) fn value_mut(&mut self, sym: Sym<T>) -> &mut T {
        &mut self.slots[sym.index()].value
    }

    /// Live symbols with their values, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Sym<T>, &T)> + '_ {
        self.slots.iter().enumerate().filter(|(_, slot)| slot.len != FREE).map(|(i, slot)| (Sym::new(i as u32), &slot.value))
    }

    /// Bytes allocated by the table itself (arena, slots, index, free list), not by its values.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity()
            + self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.index.allocation_size()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Rewrites the arena without the dead bytes once they outweigh the live ones (and are worth
    /// a copy), and gives back index memory once it is mostly empty. Symbols do not change.
    fn compact_if_sparse(&mut self) {
        let live_bytes = self.arena.len() - self.dead_bytes;
        if self.dead_bytes > live_bytes && self.dead_bytes > 64 * 1024 {
            let mut arena = String::with_capacity(live_bytes);
            for slot in self.slots.iter_mut().filter(|slot| slot.len != FREE) {
                let (start, end) = (slot.start as usize, slot.start as usize + slot.len as usize);
                slot.start = arena.len() as u32;
                arena.push_str(&self.arena[start..end]);
            }
            self.arena = arena;
            self.dead_bytes = 0;
        }
        if self.index.capacity() > 4 * self.index.len().max(1024) {
            let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
            self.index.shrink_to(self.index.len(), |&i| hasher.hash_one(name_of(arena, slots, i)));
        }
    }
}

impl<T: Default> SymbolTable<T> {
    /// The symbol of `name`, interning it with a default value if new.
    pub(crate) fn intern(&mut self, name: &str) -> Sym<T> {
        let hash = self.hasher.hash_one(name);
        if let Some(&i) = self.index.find(hash, |&i| name_of(&self.arena, &self.slots, i) == name) {
            return Sym::new(i);
        }
        let start = u32::try_from(self.arena.len()).ok().filter(|start| start.checked_add(name.len() as u32).is_some_and(|end| end < FREE));
        let (Some(start), Ok(len)) = (start, u32::try_from(name.len())) else {
            panic!("symbol table arena is full (4 GiB of names)");
        };
        self.arena.push_str(name);
        let slot = Slot { start, len, value: T::default() };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
        self.index.insert_unique(hash, i, |&j| hasher.hash_one(name_of(arena, slots, j)));
        Sym::new(i)
    }

    /// Removes every entry for which `keep` is false, then compacts if worthwhile. Returns how
    /// many were removed. Removed symbols become invalid: no copy of them may remain.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(Sym<T>, &T) -> bool) -> usize {
        let mut removed = 0;
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if slot.len == FREE || keep(Sym::new(i as u32), &slot.value) {
                continue;
            }
            let hash = self.hasher.hash_one(name_of(&self.arena, &self.slots, i as u32));
            match self.index.find_entry(hash, |&j| j as usize == i) {
                Ok(entry) => {
                    entry.remove();
                }
                Err(_) => unreachable!("a live slot is in the index"),
            }
            let slot = &mut self.slots[i];
            self.dead_bytes += slot.len as usize;
            *slot = Slot { start: 0, len: FREE, value: T::default() };
            self.free.push(i as u32);
            removed += 1;
        }
        if removed > 0 {
            self.compact_if_sparse();
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_idempotent_and_names_round_trip() {
        let mut table = SymbolTable::<u8>::default();
        let a = table.intern("ts_2Xfirst");
        let b = table.intern("ts_2Xsecond");
        assert_ne!(a, b);
        assert_eq!(table.intern("ts_2Xfirst"), a);
        assert_eq!(table.get("ts_2Xsecond"), Some(b));
        assert_eq!(table.get("ts_2Xthird"), None);
        assert_eq!(table.name(a), "ts_2Xfirst");
        assert_eq!(table.len(), 2);
        *table.value_mut(b) = 7;
        assert_eq!(*table.value(b), 7);
        assert_eq!(std::mem::size_of::<Option<Sym<u8>>>(), 4);
    }

    #[test]
    fn removed_slots_are_reused_and_values_reset() {
        let mut table = SymbolTable::<u8>::default();
        let a = table.intern("a");
        let b = table.intern("b");
        *table.value_mut(a) = 1;
        assert_eq!(table.retain(|sym, _| sym != a), 1);
        assert_eq!(table.get("a"), None);
        assert_eq!(table.name(b), "b");
        let c = table.intern("c");
        assert_eq!(c.index(), a.index(), "the free slot is reused");
        assert_eq!(*table.value(c), 0);
        assert_eq!(table.name(c), "c");
        assert_eq!(table.iter().map(|(sym, _)| table.name(sym)).collect::<Vec<_>>(), ["c", "b"]);
    }

    #[test]
    fn compaction_keeps_every_symbol_and_reclaims_dead_bytes() {
        let mut table = SymbolTable::<u32>::default();
        let names: Vec<String> = (0..20_000).map(|i| format!("ep_2X{i:025}")).collect();
        let syms: Vec<_> = names.iter().map(|n| table.intern(n)).collect();
        for (i, sym) in syms.iter().enumerate() {
            *table.value_mut(*sym) = i as u32;
        }
        let before = table.arena.len();
        table.retain(|sym, _| sym.index() % 4 == 0);
        assert!(table.arena.len() < before / 2, "arena compacted: {} of {before}", table.arena.len());
        assert_eq!(table.dead_bytes, 0);
        for (i, (name, sym)) in names.iter().zip(&syms).enumerate() {
            if i % 4 == 0 {
                assert_eq!(table.get(name), Some(*sym));
                assert_eq!(table.name(*sym), name);
                assert_eq!(*table.value(*sym), i as u32);
            } else {
                assert_eq!(table.get(name), None);
            }
        }
        assert_eq!(table.len(), 5_000);
    }
}
