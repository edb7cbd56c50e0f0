//! One sequence's cache of past keys and values, per layer: `f32`, or `f16` bits where the
//! model rounds its cache to `f16` anyway (llama.cpp's arithmetic) and the CPU's attention
//! kernels read `f16` at full speed, which halves the memory every decode step reads.

use kiln_kernels::causal_attention::CacheView;
use kiln_kernels::quant::f32_to_half_slice;

/// Keys and values of past positions of one sequence, per layer.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<Layer>,
    len: usize,
    capacity: usize,
}

/// Fewest positions a full cache grows by (it doubles beyond, up to its capacity): grown from
/// a prompt's length by `Vec`'s doubling, a decoding cache came due every few dozen steps, and
/// each time the step copied every layer's keys and values into fresh, page-faulted memory
/// (perf, SmolLM2 at 8 streams: 1.5% of the step's thread).
const GROWTH: usize = 256;

/// One layer's keys and values, `kv_heads * head_dim` per position, in one element type.
#[derive(Debug, Clone)]
struct Rows<T> {
    keys: Vec<T>,
    values: Vec<T>,
}

impl<T> Rows<T> {
    fn new() -> Self {
        Rows {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Keeps the first `len` values of keys and of values.
    fn truncate(&mut self, len: usize) {
        self.keys.truncate(len);
        self.values.truncate(len);
    }

    /// Makes room for one more position of `width` values: when keys or values are full,
    /// room for as many positions again as they hold and at least [`GROWTH`] more, but not
    /// past `capacity` positions (always for the one).
    fn make_room(&mut self, width: usize, capacity: usize) {
        for v in [&mut self.keys, &mut self.values] {
            if v.len() + width > v.capacity() {
                let held = v.len() / width.max(1);
                let more = held.max(GROWTH).min(capacity.saturating_sub(held)).max(1);
                v.reserve_exact(more * width);
            }
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        (self.keys.len() + self.values.len()) * std::mem::size_of::<T>()
    }

    /// Bytes allocated.
    fn allocated_bytes(&self) -> usize {
        (self.keys.capacity() + self.values.capacity()) * std::mem::size_of::<T>()
    }
}

/// One layer's rows: `f32`, or `f16` bits.
#[derive(Debug, Clone)]
enum Layer {
    F32(Rows<f32>),
    F16(Rows<u16>),
}

impl Layer {
    /// Keeps the first `len` values of keys and of values.
    fn truncate(&mut self, len: usize) {
        match self {
            Layer::F32(r) => r.truncate(len),
            Layer::F16(r) => r.truncate(len),
        }
    }

    /// Values held in keys (as many as in values).
    fn stored(&self) -> usize {
        match self {
            Layer::F32(r) => r.keys.len(),
            Layer::F16(r) => r.keys.len(),
        }
    }

    /// Bytes held.
    fn bytes(&self) -> usize {
        match self {
            Layer::F32(r) => r.bytes(),
            Layer::F16(r) => r.bytes(),
        }
    }

    /// Bytes allocated.
    fn allocated_bytes(&self) -> usize {
        match self {
            Layer::F32(r) => r.allocated_bytes(),
            Layer::F16(r) => r.allocated_bytes(),
        }
    }
}

impl KvCache {
    /// An empty cache of `layers` layers for at most `capacity` positions, in `f16` bits if
    /// `f16` (the values stored must then be `f16`-exact, or they are rounded).
    pub(crate) fn new(layers: usize, capacity: usize, f16: bool) -> Self {
        let layer = if f16 {
            Layer::F16(Rows::new())
        } else {
            Layer::F32(Rows::new())
        };
        KvCache {
            layers: vec![layer; layers],
            len: 0,
            capacity,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Most positions this cache may hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Number of layers cached.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Whether the keys and values are held as `f16`.
    pub fn is_f16(&self) -> bool {
        matches!(self.layers.first(), Some(Layer::F16(_)))
    }

    /// Forgets every position, and any values pushed but not yet counted as one (keeps the
    /// allocation): the cache is as good as new, for another sequence.
    pub fn clear(&mut self) {
        for l in &mut self.layers {
            l.truncate(0);
        }
        self.len = 0;
    }

    /// Bytes allocated for keys and values (at least [`KvCache::bytes`]).
    pub fn allocated_bytes(&self) -> usize {
        self.layers.iter().map(Layer::allocated_bytes).sum()
    }

    /// Keeps only the first `len` positions (a shared prompt prefix, for reuse).
    pub fn truncate(&mut self, len: usize) {
        if len >= self.len {
            return;
        }
        for l in &mut self.layers {
            let width = l.stored() / self.len;
            l.truncate(len * width);
        }
        self.len = len;
    }

    /// Sets the most positions this cache may hold (at least its current length).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(self.len);
    }

    /// Bytes held by the cached keys and values.
    pub fn bytes(&self) -> usize {
        self.layers.iter().map(Layer::bytes).sum()
    }

    /// Appends one position's `keys` and `values` to layer `layer` (the position counts once
    /// every layer has it: see [`KvCache::advance`]). An `f16` cache takes `f16`-exact values
    /// (others would be rounded).
    pub(crate) fn push(&mut self, layer: usize, keys: &[f32], values: &[f32]) {
        match &mut self.layers[layer] {
            Layer::F32(r) => r.make_room(keys.len(), self.capacity),
            Layer::F16(r) => r.make_room(keys.len(), self.capacity),
        }
        match &mut self.layers[layer] {
            Layer::F32(r) => {
                r.keys.extend_from_slice(keys);
                r.values.extend_from_slice(values);
            }
            Layer::F16(r) => {
                // 16 values per instruction where the CPU converts them (`vcvtps2ph`).
                for (held, new) in [(&mut r.keys, keys), (&mut r.values, values)] {
                    let at = held.len();
                    held.resize(at + new.len(), 0);
                    f32_to_half_slice(new, &mut held[at..]);
                }
            }
        }
    }

    /// Counts `n` positions pushed to every layer.
    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }

    /// Layer `layer`'s keys and values, for the attention kernel.
    pub(crate) fn view(&self, layer: usize) -> CacheView<'_> {
        match &self.layers[layer] {
            Layer::F32(r) => CacheView::F32 {
                keys: &r.keys,
                values: &r.values,
            },
            Layer::F16(r) => CacheView::F16 {
                keys: &r.keys,
                values: &r.values,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_kernels::quant::{half_to_f32, round_to_f16};

    fn contents(c: &KvCache, layer: usize) -> (Vec<f32>, Vec<f32>) {
        match c.view(layer) {
            CacheView::F32 { keys, values } => (keys.to_vec(), values.to_vec()),
            CacheView::F16 { keys, values } => (
                keys.iter().map(|&h| half_to_f32(h)).collect(),
                values.iter().map(|&h| half_to_f32(h)).collect(),
            ),
        }
    }

    /// `f16`-exact values read back the same from both forms, through pushes, truncation and
    /// clearing, and the `f16` form holds half the bytes.
    #[test]
    fn f16_and_f32_caches_hold_the_same_values() {
        let value = |i: usize| round_to_f16(((i * 7919 % 1013) as f32 - 506.0) / 37.0);
        let mut wide = KvCache::new(2, 16, false);
        let mut narrow = KvCache::new(2, 16, true);
        assert!(!wide.is_f16() && narrow.is_f16());
        for pos in 0..5 {
            for c in [&mut wide, &mut narrow] {
                for layer in 0..2 {
                    let k: Vec<f32> = (0..6).map(|i| value(pos * 100 + layer * 10 + i)).collect();
                    let v: Vec<f32> = (0..6).map(|i| value(pos * 200 + layer * 10 + i)).collect();
                    c.push(layer, &k, &v);
                }
                c.advance(1);
            }
        }
        assert_eq!(narrow.len(), 5);
        assert_eq!(wide.bytes(), 2 * narrow.bytes());
        for layer in 0..2 {
            assert_eq!(contents(&wide, layer), contents(&narrow, layer));
        }
        wide.truncate(3);
        narrow.truncate(3);
        assert_eq!(narrow.len(), 3);
        assert_eq!(contents(&narrow, 1).0.len(), 3 * 6);
        assert_eq!(contents(&wide, 1), contents(&narrow, 1));
        // Values pushed without `advance` (a step cut short) go too.
        narrow.push(0, &[0.5; 6], &[0.25; 6]);
        narrow.clear();
        assert!(narrow.is_empty() && narrow.bytes() == 0);
        assert!(narrow.allocated_bytes() > 0, "the allocation stays");
        wide.clear();
        wide.push(1, &[0.5; 6], &[0.25; 6]);
        wide.clear();
        assert!(wide.is_empty() && wide.bytes() == 0);
    }

    /// A growing cache reallocates rarely (room for 256 positions first, then doubling) and
    /// never holds room past its capacity: one layer's allocation, position by position.
    #[test]
    fn a_cache_grows_in_large_steps_up_to_its_capacity() {
        for (f16, size) in [(false, 4), (true, 2)] {
            for capacity in [40, 300, 1000] {
                let mut c = KvCache::new(1, capacity, f16);
                let mut sizes = Vec::new();
                for _ in 0..capacity {
                    c.push(0, &[0.5; 6], &[0.25; 6]);
                    c.advance(1);
                    let positions = c.allocated_bytes() / (2 * 6 * size);
                    if sizes.last() != Some(&positions) {
                        sizes.push(positions);
                    }
                }
                let want: &[usize] = match capacity {
                    40 => &[40],
                    300 => &[256, 300],
                    _ => &[256, 512, 1000],
                };
                assert_eq!(sizes, want, "capacity {capacity}, f16 {f16}");
            }
        }
    }
}
