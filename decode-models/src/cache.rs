//! The burn implementation of [`Cache`]: a preallocated per-layer key/value cache.
//!
//! Slots are preallocated and written in place; rolling back is `truncate` (O(1): later writes
//! overwrite), following beams is `reorder` (one `select` per layer). Each row also records which
//! slots hold real tokens: padding and per-row rollbacks ([`Cache::rollback`]) become masked
//! slots, so rows can advance by different amounts in one batch. The CPU path moves the buffers
//! to host memory for a pass (`KvCache::take_host`, private to the crate).

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, DType, Int, Tensor, TensorData};
use decode_core::memory::zeroed_f32;
use decode_core::{Batch, Cache, Error, Result};
use decode_kernels::attention::KvLayer;

/// Where a forward pass writes its new tokens, returned by [`KvCache::begin`].
#[derive(Debug)]
pub struct Step<B: Backend> {
    /// First slot written by this step.
    pub start: usize,
    /// Position id of every new token, `rows × steps`.
    pub positions: Vec<i64>,
    /// Attention mask `[rows, 1, steps, len]` (`true` = masked), or `None` when plain causal
    /// attention is exact (no padding and no hidden slots).
    pub mask: Option<Tensor<B, 4, Bool>>,
}

/// A preallocated per-layer key/value cache on a burn backend: `[rows, heads, capacity, head_dim]`.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 4>, Tensor<B, 4>)>>,
    rows: usize,
    heads: usize,
    head_dim: usize,
    capacity: usize,
    len: usize,
    /// Per row, per slot: does it hold a real token?
    real: Vec<Vec<bool>>,
    positions: Vec<usize>,
    /// True while every slot of every row is real (plain causal attention suffices).
    dense: bool,
    dtype: DType,
    device: B::Device,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache of `layers` layers for `rows` sequences, with room for `capacity` slots
    /// before it grows (to what a pass needs, or double), holding keys and values in `dtype` (the
    /// dtype the model computes in: f32, or f16/bf16 on a GPU). On a CPU backend the buffers are
    /// allocated in host memory with a call that can fail: [`Error::OutOfMemory`], not an abort.
    pub fn new(
        layers: usize,
        rows: usize,
        heads: usize,
        head_dim: usize,
        capacity: usize,
        device: &B::Device,
        dtype: DType,
    ) -> Result<Self> {
        let capacity = capacity.max(1);
        let mut cache = KvCache {
            layers: Vec::with_capacity(layers),
            rows,
            heads,
            head_dim,
            capacity,
            len: 0,
            real: vec![Vec::new(); rows],
            positions: vec![0; rows],
            dense: true,
            dtype,
            device: device.clone(),
        };
        for _ in 0..layers {
            let layer = (cache.zeros(rows, capacity)?, cache.zeros(rows, capacity)?);
            cache.layers.push(Some(layer));
        }
        Ok(cache)
    }

    /// One layer's keys or values, zero: `[rows, heads, capacity, head_dim]`.
    fn zeros(&self, rows: usize, capacity: usize) -> Result<Tensor<B, 4>> {
        let shape = [rows, self.heads, capacity, self.head_dim];
        if !crate::backend::is_cpu::<B>(&self.device) {
            return Ok(Tensor::zeros(shape, (&self.device, self.dtype)));
        }
        let values = zeroed_f32(self.values_of(rows, capacity)?, "a layer of the KV cache")?;
        Ok(Tensor::from_data(
            TensorData::new(values, shape),
            (&self.device, self.dtype),
        ))
    }

    /// Values in one layer's keys for `rows × capacity` slots, checked.
    fn values_of(&self, rows: usize, capacity: usize) -> Result<usize> {
        [self.heads, capacity, self.head_dim]
            .into_iter()
            .try_fold(rows, usize::checked_mul)
            .ok_or_else(|| {
                Error::OutOfMemory(format!(
                    "a KV cache of {rows} rows × {capacity} slots is larger than any address space"
                ))
            })
    }

    /// Slots allocated.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// `[layers, heads, head_dim]`: the model shape this cache was made for.
    pub fn model_shape(&self) -> [usize; 3] {
        [self.layers.len(), self.heads, self.head_dim]
    }

    /// Reserves the slots of `batch`, returns their positions and mask, and advances [`Cache::len`].
    /// Call once per forward pass, then [`KvCache::append`] once per layer.
    pub fn begin(&mut self, batch: &Batch) -> Result<Step<B>> {
        if batch.rows() != self.rows {
            return Err(Error::Shape(format!(
                "batch has {} rows but the cache was made for {}",
                batch.rows(),
                self.rows
            )));
        }
        let steps = batch.steps();
        let start = self.len;
        let end = start + steps;
        if end > self.capacity {
            self.grow(end.max(self.capacity.saturating_mul(2)))?;
        }
        let mut positions = Vec::with_capacity(self.rows * steps);
        for row in 0..self.rows {
            for step in 0..steps {
                let real = batch.is_real(row, step);
                // Padding gets position 0, as transformers' `cumsum(mask) - 1` clamped at 0.
                positions.push(self.positions[row].saturating_sub(usize::from(!real)) as i64);
                self.positions[row] += usize::from(real);
                self.real[row].push(real);
            }
        }
        self.dense &= !batch.has_padding();
        self.len = end;
        let mask = (!self.dense).then(|| self.attention_mask(start, steps));
        Ok(Step {
            start,
            positions,
            mask,
        })
    }

    /// Writes one layer's new keys and values (`[rows, heads, steps, head_dim]`) at `start` and
    /// returns the layer's keys and values for all `len` slots.
    pub fn append(
        &mut self,
        layer: usize,
        start: usize,
        k: Tensor<B, 4>,
        v: Tensor<B, 4>,
    ) -> Result<(Tensor<B, 4>, Tensor<B, 4>)> {
        let steps = k.dims()[2];
        let (rows, heads, head_dim, len) = (self.rows, self.heads, self.head_dim, self.len);
        let slot = self
            .layers
            .get_mut(layer)
            .ok_or_else(|| Error::Shape(format!("cache has no layer {layer}")))?;
        // Taken out so the tensors are uniquely owned: burn then writes in place instead of copying.
        let (ck, cv) = slot
            .take()
            .ok_or_else(|| Error::Shape(format!("cache layer {layer} is in use")))?;
        let range = [0..rows, 0..heads, start..start + steps, 0..head_dim];
        let ck = ck.slice_assign(range.clone(), k);
        let cv = cv.slice_assign(range, v);
        let all = [0..rows, 0..heads, 0..len, 0..head_dim];
        let out = (ck.clone().slice(all.clone()), cv.clone().slice(all));
        *slot = Some((ck, cv));
        Ok(out)
    }

    /// Whether each slot of `row` holds a real token (`false` for padding and rolled-back slots).
    /// Slots `0..len`; empty for a row that does not exist.
    pub fn real_slots(&self, row: usize) -> &[bool] {
        self.real.get(row).map_or(&[], Vec::as_slice)
    }

    /// Moves every layer's keys and values into host memory for a forward pass computed there
    /// (the CPU path). On CPU backends the buffers move without a copy. Give them back with
    /// [`KvCache::restore_host`] before anything else touches the cache.
    pub(crate) fn take_host(&mut self) -> Result<Vec<KvLayer>> {
        let shape = [self.rows, self.heads, self.capacity, self.head_dim];
        if let Some(layer) = self.layers.iter().position(Option::is_none) {
            return Err(Error::Shape(format!("cache layer {layer} is in use")));
        }
        let mut out = Vec::with_capacity(self.layers.len());
        for (layer, slot) in self.layers.iter_mut().enumerate() {
            let (k, v) = slot
                .take()
                .ok_or_else(|| Error::Shape(format!("cache layer {layer} is in use")))?;
            let host = |t: Tensor<B, 4>| {
                t.into_data()
                    .convert::<f32>()
                    .into_vec::<f32>()
                    .map_err(|e| Error::Shape(format!("reading cache layer {layer}: {e:?}")))
            };
            out.push(KvLayer {
                keys: host(k)?,
                values: host(v)?,
                shape,
            });
        }
        Ok(out)
    }

    /// Puts back what [`KvCache::take_host`] took, written or not.
    pub(crate) fn restore_host(&mut self, layers: Vec<KvLayer>) {
        for (slot, layer) in self.layers.iter_mut().zip(layers) {
            let tensor = |v: Vec<f32>| {
                Tensor::from_data(TensorData::new(v, layer.shape), (&self.device, self.dtype))
            };
            *slot = Some((tensor(layer.keys), tensor(layer.values)));
        }
    }

    /// `[rows, 1, steps, len]` for the `steps` new tokens written from slot `start`, true where a
    /// new token must not look: later slots (causal, bottom-right aligned: token i sees the cache
    /// and new tokens ≤ i), and hidden or padding slots (except its own, so a padding query never
    /// has an empty softmax). [`KvCache::begin`] returns it when slots are hidden.
    pub fn attention_mask(&self, start: usize, steps: usize) -> Tensor<B, 4, Bool> {
        let len = self.len;
        let mut m = Vec::with_capacity(self.rows * steps * len);
        for real in &self.real {
            for i in 0..steps {
                let me = start + i;
                m.extend((0..len).map(|j| j > me || (j != me && !real[j])));
            }
        }
        Tensor::from_data(TensorData::new(m, [self.rows, 1, steps, len]), &self.device)
    }

    /// Room for `capacity` slots, the written ones kept.
    fn grow(&mut self, capacity: usize) -> Result<()> {
        if crate::backend::is_cpu::<B>(&self.device) {
            return self.rebuild_on_host(self.rows, capacity, |r| r);
        }
        let extra = capacity - self.capacity;
        let shape = [self.rows, self.heads, extra, self.head_dim];
        for (k, v) in self.layers.iter_mut().flatten() {
            let pad = Tensor::<B, 4>::zeros(shape, (&self.device, self.dtype));
            *k = Tensor::cat(vec![k.clone(), pad.clone()], 2);
            *v = Tensor::cat(vec![v.clone(), pad], 2);
        }
        self.capacity = capacity;
        Ok(())
    }

    /// Rebuilds every layer in host memory as `rows` rows of `capacity` slots, new row `r` a copy
    /// of old row `source(r)`. The new buffers are all allocated before the old ones go, so a
    /// refused allocation is an [`Error::OutOfMemory`] that leaves the cache as it was.
    fn rebuild_on_host(
        &mut self,
        rows: usize,
        capacity: usize,
        source: impl Fn(usize) -> usize,
    ) -> Result<()> {
        let old = self.take_host()?;
        let n = match self.values_of(rows, capacity) {
            Ok(n) => n,
            Err(e) => {
                self.restore_host(old);
                return Err(e);
            }
        };
        let mut new = Vec::with_capacity(old.len());
        for _ in &old {
            match (
                zeroed_f32(n, "a layer of the KV cache"),
                zeroed_f32(n, "a layer of the KV cache"),
            ) {
                (Ok(keys), Ok(values)) => new.push(KvLayer {
                    keys,
                    values,
                    shape: [rows, self.heads, capacity, self.head_dim],
                }),
                (Err(e), _) | (_, Err(e)) => {
                    self.restore_host(old);
                    return Err(e);
                }
            }
        }
        let (heads, hd, old_capacity) = (self.heads, self.head_dim, self.capacity);
        let kept = old_capacity.min(capacity) * hd;
        for (to, from) in new.iter_mut().zip(&old) {
            for r in 0..rows {
                for h in 0..heads {
                    let dst = (r * heads + h) * capacity * hd;
                    let src = (source(r) * heads + h) * old_capacity * hd;
                    to.keys[dst..dst + kept].copy_from_slice(&from.keys[src..src + kept]);
                    to.values[dst..dst + kept].copy_from_slice(&from.values[src..src + kept]);
                }
            }
        }
        drop(old);
        self.rows = rows;
        self.capacity = capacity;
        self.restore_host(new);
        Ok(())
    }

    fn recount(&mut self, row: usize) {
        self.positions[row] = self.real[row].iter().filter(|&&r| r).count();
        self.dense = self.real.iter().all(|r| r.iter().all(|&x| x));
    }
}

impl<B: Backend> Cache for KvCache<B> {
    fn rows(&self) -> usize {
        self.rows
    }

    fn len(&self) -> usize {
        self.len
    }

    fn positions(&self) -> &[usize] {
        &self.positions
    }

    fn truncate(&mut self, len: usize) -> Result<()> {
        if len > self.len {
            return Err(Error::invalid(
                "cache length",
                format!("cannot truncate {} slots to {len}", self.len),
            ));
        }
        self.len = len;
        for row in 0..self.rows {
            self.real[row].truncate(len);
            self.recount(row);
        }
        Ok(())
    }

    fn reorder(&mut self, rows: &[usize]) -> Result<()> {
        if let Some(&bad) = rows.iter().find(|&&r| r >= self.rows) {
            return Err(Error::invalid(
                "cache row",
                format!("row {bad} does not exist (the cache has {})", self.rows),
            ));
        }
        if crate::backend::is_cpu::<B>(&self.device) {
            // The new rows are allocated whole before the old go: beam search's peak is two caches.
            self.rebuild_on_host(rows.len(), self.capacity, |r| rows[r])?;
        } else {
            let ids: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
            let index =
                Tensor::<B, 1, Int>::from_data(TensorData::new(ids, [rows.len()]), &self.device);
            for (k, v) in self.layers.iter_mut().flatten() {
                *k = k.clone().select(0, index.clone());
                *v = v.clone().select(0, index.clone());
            }
        }
        self.real = rows.iter().map(|&r| self.real[r].clone()).collect();
        self.positions = rows.iter().map(|&r| self.positions[r]).collect();
        self.rows = rows.len();
        Ok(())
    }

    fn rollback(&mut self, row: usize, keep: usize) -> Result<()> {
        let real = self
            .real
            .get_mut(row)
            .ok_or_else(|| Error::invalid("cache row", format!("row {row} does not exist")))?;
        let mut seen = 0;
        for slot in real.iter_mut() {
            if *slot {
                if seen == keep {
                    *slot = false;
                } else {
                    seen += 1;
                }
            }
        }
        self.recount(row);
        Ok(())
    }

    fn trim(&mut self) {
        let used = self
            .real
            .iter()
            .map(|r| r.iter().rposition(|&x| x).map_or(0, |i| i + 1))
            .max()
            .unwrap_or(0);
        if used < self.len {
            self.len = used;
            for real in &mut self.real {
                real.truncate(used);
            }
            for row in 0..self.rows {
                self.recount(row);
            }
        }
    }
}
