//! Symbol tables: each distinct name (session id, hostname, …) is stored once, in a string
//! arena, and named everywhere else by a 4-byte [`Sym`]. A table also holds one value per name,
//! in a dense vector indexed by the symbol, so a lookup by symbol is an array access.
//!
//! Guarantees: a symbol names the same string and value until it is removed; a removed symbol's
//! slot is reused by a later name, so callers must drop every copy of a symbol before removing it
//! (the state does this with a mark-and-sweep, see `OwnershipState::evict_ended`).
//!
//! The arena is a list of fixed-size chunks rather than one growing string: growing never copies
//! what is there nor leaves a large freed buffer behind, and the bytes of removed names are
//! reclaimed chunk by chunk (a chunk more than half dead has its live names moved to the newest
//! chunk and is freed), so the arena stays under twice its live bytes plus one chunk, and churn
//! reuses same-sized blocks instead of fragmenting the heap.
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
        let slot = NonZeroU32::new(
            slot.checked_add(1)
                .expect("symbol table has more than 2^32 - 1 names"),
        )
        .expect("slot + 1 is not zero");
        Self {
            slot,
            table: PhantomData,
        }
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

/// Bytes per arena chunk; a name this long or longer gets a chunk of its own.
const CHUNK_BYTES: usize = 64 * 1024;
/// A position in the arena: the chunk in the high bits, the offset in it in the low ones.
const OFFSET_BITS: u32 = 16;
const MAX_CHUNKS: usize = 1 << (32 - OFFSET_BITS);

#[derive(Debug, Default)]
struct Chunk {
    text: String,
    /// Bytes of removed names.
    dead: usize,
}

/// Names in fixed-size chunks, see the module documentation.
#[derive(Debug, Default)]
struct Arena {
    chunks: Vec<Chunk>,
    /// The chunk names are appended to.
    tail: Option<usize>,
    /// Chunks holding nothing (and no memory), reused before new ones.
    free: Vec<usize>,
}

fn chunk_of(pos: u32) -> usize {
    (pos >> OFFSET_BITS) as usize
}

impl Arena {
    fn get(&self, pos: u32, len: u32) -> &str {
        if len == 0 {
            return "";
        }
        let offset = (pos & ((1 << OFFSET_BITS) - 1)) as usize;
        &self.chunks[chunk_of(pos)].text[offset..offset + len as usize]
    }

    /// Stores a name, returns its position. The empty name takes no room.
    fn push(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let c = if name.len() >= CHUNK_BYTES {
            self.take_chunk(name.len())
        } else {
            match self.tail {
                // Strictly less, so that every offset fits in OFFSET_BITS.
                Some(t) if self.chunks[t].text.len() + name.len() < CHUNK_BYTES => t,
                _ => {
                    let t = self.take_chunk(CHUNK_BYTES);
                    self.tail = Some(t);
                    t
                }
            }
        };
        let text = &mut self.chunks[c].text;
        let offset = text.len();
        text.push_str(name);
        ((c as u32) << OFFSET_BITS) | offset as u32
    }

    fn take_chunk(&mut self, capacity: usize) -> usize {
        let c = self.free.pop().unwrap_or_else(|| {
            assert!(
                self.chunks.len() < MAX_CHUNKS,
                "symbol table arena is full ({MAX_CHUNKS} chunks)"
            );
            self.chunks.push(Chunk::default());
            self.chunks.len() - 1
        });
        self.chunks[c] = Chunk {
            text: String::with_capacity(capacity),
            dead: 0,
        };
        c
    }

    /// Marks a name's bytes dead; a chunk left with no live name is freed (or, for the chunk
    /// being appended to, emptied).
    fn release(&mut self, pos: u32, len: u32) {
        if len == 0 {
            return;
        }
        let c = chunk_of(pos);
        let chunk = &mut self.chunks[c];
        chunk.dead += len as usize;
        if chunk.dead == chunk.text.len() {
            if self.tail == Some(c) {
                chunk.text.clear();
                chunk.dead = 0;
            } else {
                self.free_chunk(c);
            }
        }
    }

    fn free_chunk(&mut self, c: usize) {
        self.chunks[c] = Chunk::default();
        self.free.push(c);
    }

    /// Chunks other than the tail with more dead bytes than live ones.
    fn sparse(&self) -> Vec<bool> {
        self.chunks
            .iter()
            .enumerate()
            .map(|(c, chunk)| self.tail != Some(c) && chunk.dead * 2 > chunk.text.len())
            .collect()
    }

    fn live_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.text.len() - c.dead).sum()
    }

    fn heap_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.text.capacity()).sum::<usize>()
            + self.chunks.capacity() * std::mem::size_of::<Chunk>()
            + self.free.capacity() * std::mem::size_of::<usize>()
    }
}

/// Where a slot's name lies in the arena. `len == FREE` marks a free slot.
#[derive(Debug, Clone)]
struct Slot<T> {
    pos: u32,
    len: u32,
    value: T,
}

const FREE: u32 = u32::MAX;

/// Interned names with one value each, see the module documentation.
pub(crate) struct SymbolTable<T> {
    arena: Arena,
    slots: Vec<Slot<T>>,
    /// Slot indexes, hashed by their name.
    index: HashTable<u32>,
    hasher: RandomState,
    /// Free slot indexes, reused before the vector grows.
    free: Vec<u32>,
}

impl<T> fmt::Debug for SymbolTable<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SymbolTable")
            .field("len", &self.len())
            .field("live_bytes", &self.arena.live_bytes())
            .field("chunks", &(self.arena.chunks.len() - self.arena.free.len()))
            .finish()
    }
}

impl<T> Default for SymbolTable<T> {
    fn default() -> Self {
        Self {
            arena: Arena::default(),
            slots: Vec::new(),
            index: HashTable::new(),
            hasher: RandomState::new(),
            free: Vec::new(),
        }
    }
}

/// The name of slot `i`; a free function so that it can borrow the arena and slots while the
/// index is borrowed mutably.
fn name_of<'a, T>(arena: &'a Arena, slots: &[Slot<T>], i: u32) -> &'a str {
    let slot = &slots[i as usize];
    arena.get(slot.pos, slot.len)
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
        self.index
            .find(hash, |&i| name_of(&self.arena, &self.slots, i) == name)
            .map(|&i| Sym::new(i))
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

    /// Whether a symbol names a live entry (not removed).
    #[cfg(test)]
    pub(crate) fn is_live(&self, sym: Sym<T>) -> bool {
        self.slots
            .get(sym.index())
            .is_some_and(|slot| slot.len != FREE)
    }

    /// Live symbols with their values, in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Sym<T>, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| slot.len != FREE)
            .map(|(i, slot)| (Sym::new(i as u32), &slot.value))
    }

    /// Bytes allocated by the table itself (arena, slots, index, free list), not by its values.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.heap_bytes()
            + self.slots.capacity() * std::mem::size_of::<Slot<T>>()
            + self.index.allocation_size()
            + self.free.capacity() * std::mem::size_of::<u32>()
    }

    /// Moves the live names out of the arena's sparse chunks, freeing each as it empties, and
    /// gives back index memory once it is mostly empty. Symbols do not change.
    fn compact(&mut self) {
        let sparse = self.arena.sparse();
        if sparse.contains(&true) {
            // In arena order, so that each chunk empties (and is freed, ready to be reused as the
            // next new chunk) before the next one is touched.
            let mut moves: Vec<(u32, u32)> = (self.slots.iter().enumerate())
                .filter(|(_, slot)| slot.len != FREE && slot.len != 0 && sparse[chunk_of(slot.pos)])
                .map(|(i, slot)| (slot.pos, i as u32))
                .collect();
            moves.sort_unstable();
            let mut name = String::new();
            for (pos, i) in moves {
                let len = self.slots[i as usize].len;
                name.clear();
                name.push_str(self.arena.get(pos, len));
                self.arena.release(pos, len);
                self.slots[i as usize].pos = self.arena.push(&name);
            }
        }
        if self.index.capacity() > 4 * self.index.len().max(1024) {
            let (arena, slots, hasher) = (&self.arena, &self.slots, &self.hasher);
            self.index.shrink_to(self.index.len(), |&i| {
                hasher.hash_one(name_of(arena, slots, i))
            });
        }
    }
}

impl<T: Default> SymbolTable<T> {
    /// The symbol of `name`, interning it with a default value if new.
    pub(crate) fn intern(&mut self, name: &str) -> Sym<T> {
        let hash = self.hasher.hash_one(name);
        if let Some(&i) = self
            .index
            .find(hash, |&i| name_of(&self.arena, &self.slots, i) == name)
        {
            return Sym::new(i);
        }
        let len = u32::try_from(name.len())
            .ok()
            .filter(|&len| len != FREE)
            .expect("a name shorter than 4 GiB");
        let pos = self.arena.push(name);
        let slot = Slot {
            pos,
            len,
            value: T::default(),
        };
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
        self.index
            .insert_unique(hash, i, |&j| hasher.hash_one(name_of(arena, slots, j)));
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
            let hash = self
                .hasher
                .hash_one(name_of(&self.arena, &self.slots, i as u32));
            match self.index.find_entry(hash, |&j| j as usize == i) {
                Ok(entry) => {
                    entry.remove();
                }
                Err(_) => unreachable!("a live slot is in the index"),
            }
            let slot = &mut self.slots[i];
            self.arena.release(slot.pos, slot.len);
            *slot = Slot {
                pos: 0,
                len: FREE,
                value: T::default(),
            };
            self.free.push(i as u32);
            removed += 1;
        }
        if removed > 0 {
            self.compact();
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
        assert_eq!(
            table
                .iter()
                .map(|(sym, _)| table.name(sym))
                .collect::<Vec<_>>(),
            ["c", "b"]
        );
    }

    #[test]
    fn compaction_keeps_every_symbol_and_reclaims_dead_bytes() {
        let mut table = SymbolTable::<u32>::default();
        let names: Vec<String> = (0..20_000).map(|i| format!("ep_2X{i:025}")).collect();
        let syms: Vec<_> = names.iter().map(|n| table.intern(n)).collect();
        for (i, sym) in syms.iter().enumerate() {
            *table.value_mut(*sym) = i as u32;
        }
        let before = table.arena.heap_bytes();
        table.retain(|sym, _| sym.index() % 4 == 0);
        assert!(
            table.arena.heap_bytes() < before / 2,
            "arena compacted: {} of {before}",
            table.arena.heap_bytes()
        );
        assert_eq!(table.arena.live_bytes(), 5_000 * 30);
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

    #[test]
    fn empty_and_very_long_names() {
        let mut table = SymbolTable::<()>::default();
        let long = "x".repeat(CHUNK_BYTES + 10);
        let (empty, big, small) = (table.intern(""), table.intern(&long), table.intern("ts_1"));
        assert_eq!(
            (table.name(empty), table.name(big), table.name(small)),
            ("", long.as_str(), "ts_1")
        );
        assert_eq!(table.get(&long), Some(big));
        let chunk_bytes = |table: &SymbolTable<()>| {
            table
                .arena
                .chunks
                .iter()
                .map(|c| c.text.capacity())
                .sum::<usize>()
        };
        assert_eq!(chunk_bytes(&table), long.len() + CHUNK_BYTES);
        table.retain(|sym, _| sym != big);
        assert_eq!(
            chunk_bytes(&table),
            CHUNK_BYTES,
            "the long name's chunk is freed"
        );
        assert_eq!((table.name(empty), table.name(small)), ("", "ts_1"));
    }

    #[test]
    fn churn_keeps_the_arena_under_twice_the_live_bytes() {
        let mut table = SymbolTable::<u32>::default();
        let mut live: Vec<(String, Sym<u32>)> = Vec::new();
        for round in 0..40u32 {
            for i in 0..5_000 {
                let name = format!("ts_2X{round:05}{i:020}");
                let sym = table.intern(&name);
                *table.value_mut(sym) = round;
                live.push((name, sym));
            }
            // Remove a scattered third, as eviction does.
            let removed: Vec<bool> = live
                .iter()
                .enumerate()
                .map(|(k, _)| (k + round as usize).is_multiple_of(3))
                .collect();
            let gone: std::collections::HashSet<usize> = live
                .iter()
                .zip(&removed)
                .filter(|(_, r)| **r)
                .map(|((_, sym), _)| sym.index())
                .collect();
            table.retain(|sym, _| !gone.contains(&sym.index()));
            live = live
                .into_iter()
                .zip(removed)
                .filter(|(_, r)| !r)
                .map(|(entry, _)| entry)
                .collect();
            let arena = table
                .arena
                .chunks
                .iter()
                .map(|c| c.text.capacity())
                .sum::<usize>();
            assert!(
                arena <= 2 * table.arena.live_bytes() + 2 * CHUNK_BYTES,
                "round {round}: {arena} bytes for {} live",
                table.arena.live_bytes()
            );
        }
        assert_eq!(table.len(), live.len());
        for (name, sym) in &live {
            assert_eq!(table.get(name), Some(*sym));
            assert_eq!(table.name(*sym), name);
        }
    }
}
