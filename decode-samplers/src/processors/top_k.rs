use decode_core::sampling::Candidates;
use decode_core::{Context, Error, LogitsProcessor, Result};

/// Keeps the `k` highest logits (and every logit tied with the k-th), removes the rest.
///
/// On a dense row it finds the k-th value without selecting over the whole vocabulary: the
/// logits fall into groups of 64, and the k-th largest group maximum `m` is a lower bound of the
/// k-th largest logit (k groups each hold a value ≥ `m`), so the k-th largest logit is the k-th
/// largest of the few values ≥ `m`, found in the few groups whose maximum is ≥ `m`. Those values
/// are also the survivors, so a chain gets its candidates without another pass over the row.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    scratch: Vec<f32>,
    group_max: Vec<f32>,
    survivors: Vec<(u32, f32)>,
}

/// Logits side by side in a group's maxima pass: 16 lanes, one group each.
const LANES: usize = 16;
/// Logits per stripe: 64 rows of [`LANES`].
const STRIPE: usize = 1024;
/// Logits per group: 786 groups for GPT-2, more than a usual k, and few maxima to select from.
const GROUP: usize = STRIPE / LANES;

/// Where group `g` of a row of `len` logits lies: ids `start, start + step, …` below `end`.
///
/// The groups: each lane of each stripe of [`STRIPE`] logits (64 logits, 16 apart), so the maxima
/// pass keeps 16 running maxima and never reduces across lanes (which does not vectorise well);
/// then the tail, shorter than a stripe, in runs of [`GROUP`].
fn groups(len: usize, g: usize) -> (usize, usize, usize) {
    let striped = len / STRIPE * LANES;
    if g < striped {
        let stripe = g / LANES * STRIPE;
        (stripe + g % LANES, stripe + STRIPE, LANES)
    } else {
        let start = len / STRIPE * STRIPE + (g - striped) * GROUP;
        (start, (start + GROUP).min(len), 1)
    }
}

/// The ids and values of group `g` of `logits`.
fn group(logits: &[f32], g: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
    let (start, end, step) = groups(logits.len(), g);
    let values = logits.get(start..end).unwrap_or(&[]);
    (start..end)
        .step_by(step)
        .zip(values.iter().step_by(step).copied())
}

/// The maximum of each group of `logits` ([`groups`]) into `out`, NaN ignored, and whether
/// `logits` holds a NaN. Sixteen running maxima over the rows of a stripe (packed max
/// instructions), then a NaN count over the same stripe while it is in L1: folded into the maxima
/// loop it defeats the vectoriser (measured slower), and a pass of its own reads the row again.
fn group_maxima(logits: &[f32], out: &mut Vec<f32>) -> bool {
    out.clear();
    let mut nans = 0usize;
    let (stripes, tail) = logits.as_chunks::<STRIPE>();
    for stripe in stripes {
        let mut lanes = [f32::NEG_INFINITY; LANES];
        for row in stripe.as_chunks::<LANES>().0 {
            for (lane, &x) in lanes.iter_mut().zip(row) {
                *lane = if x > *lane { x } else { *lane };
            }
        }
        out.extend_from_slice(&lanes);
        nans += count_nan(stripe);
    }
    for run in tail.chunks(GROUP) {
        out.push(
            run.iter()
                .fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m }),
        );
    }
    nans + count_nan(tail) > 0
}

/// How many of `values` are NaN (a packed compare and add; no early exit, which would not).
fn count_nan(values: &[f32]) -> usize {
    values.iter().map(|&x| x.is_nan() as u32).sum::<u32>() as usize
}

impl TopK {
    /// `k ≥ 1`; `min_tokens_to_keep` raises `k` as in transformers.
    pub fn new(k: usize, min_tokens_to_keep: usize) -> Result<Self> {
        if k == 0 {
            return Err(Error::invalid(
                "top_k",
                "must be at least 1 (omit it to disable)",
            ));
        }
        Ok(TopK {
            k: k.max(min_tokens_to_keep),
            scratch: Vec::new(),
            group_max: Vec::new(),
            survivors: Vec::new(),
        })
    }

    /// Where the cut falls on the dense row: the k-th largest logit (by `total_cmp`, as
    /// transformers' `topk`), below which everything goes.
    fn threshold(&mut self, logits: &[f32]) -> Cut {
        let k = self.k.min(logits.len());
        if k == 0 || k == logits.len() {
            return Cut::Nothing;
        }
        // NaN sorts above everything in total order but is no group's maximum, and a
        // negative NaN survives anywhere: the exact selection keeps today's NaN behaviour.
        if group_maxima(logits, &mut self.group_max) || self.group_max.len() < k {
            return Cut::Below(kth_largest(&mut self.scratch, logits, k));
        }
        let m = kth_largest(&mut self.scratch, &self.group_max, k);
        self.survivors.clear();
        for (g, &max) in self.group_max.iter().enumerate() {
            if max >= m {
                let above = group(logits, g).filter(|&(_, x)| x >= m);
                self.survivors.extend(above.map(|(id, x)| (id as u32, x)));
            }
        }
        // At least k values are ≥ m (the k group maxima ≥ m), and every value of the top k is.
        self.scratch.clear();
        self.scratch.extend(self.survivors.iter().map(|&(_, x)| x));
        let kth = select_kth(&mut self.scratch, k);
        // Every survivor is ≥ kth ≥ m (no NaN here), so among those gathered; few but for
        // heavy ties, where a pass over the row is cheaper than sorting them by id.
        self.survivors.retain(|&(_, x)| x >= kth);
        if kth > f32::NEG_INFINITY && self.survivors.len() <= logits.len() / 8 {
            Cut::Survivors
        } else {
            Cut::Below(kth)
        }
    }
}

/// Where top-k cuts a dense row.
enum Cut {
    /// k covers the row.
    Nothing,
    /// Every logit below this goes.
    Below(f32),
    /// `TopK::survivors` holds the logits that stay with their ids, in no order; the others go
    /// (no NaN, and the k-th value is above `−∞`).
    Survivors,
}

/// The `k`-th largest of `values` (1 ≤ k ≤ len) by `total_cmp`, selected in a copy in `scratch`.
fn kth_largest(scratch: &mut Vec<f32>, values: &[f32], k: usize) -> f32 {
    scratch.clear();
    scratch.extend_from_slice(values);
    select_kth(scratch, k)
}

/// The `k`-th largest of `values` by `total_cmp`, reordering them; `−∞` (which removes nothing)
/// when `k` is not in `1..=len`, which callers rule out.
fn select_kth(values: &mut [f32], k: usize) -> f32 {
    match k.checked_sub(1) {
        Some(i) if i < values.len() => *values.select_nth_unstable_by(i, |a, b| b.total_cmp(a)).1,
        _ => f32::NEG_INFINITY,
    }
}

/// `−∞` for every logit below `kth` (a NaN is never below: kept, as transformers keeps it).
fn mask_below(logits: &mut [f32], kth: f32) {
    for x in logits {
        // A select and a store each, no branch: packed compare and blend.
        *x = if *x < kth { f32::NEG_INFINITY } else { *x };
    }
}

impl LogitsProcessor for TopK {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        match self.threshold(logits) {
            Cut::Nothing => {}
            Cut::Below(kth) => mask_below(logits, kth),
            Cut::Survivors => {
                // Stores only, then the few survivors: cheaper than a compare and blend per logit.
                logits.fill(f32::NEG_INFINITY);
                for &(id, x) in &self.survivors {
                    if let Some(slot) = logits.get_mut(id as usize) {
                        *slot = x;
                    }
                }
            }
        }
    }

    fn cuts(&self) -> bool {
        true
    }

    fn apply_and_gather(
        &mut self,
        _ctx: &Context<'_>,
        logits: &mut [f32],
        candidates: &mut Candidates,
    ) {
        match self.threshold(logits) {
            Cut::Nothing => candidates.gather(logits),
            Cut::Below(kth) => {
                mask_below(logits, kth);
                candidates.gather(logits);
            }
            Cut::Survivors => {
                // `logits` is left as it is (the chain writes the row back): no pass over it.
                candidates.clear(logits.len());
                self.survivors.sort_unstable_by_key(|&(id, _)| id);
                for &(id, x) in &self.survivors {
                    candidates.push(id, x);
                }
            }
        }
    }

    fn apply_candidates(&mut self, _ctx: &Context<'_>, candidates: &mut Candidates) {
        // The dense row's k-th value is the candidates' one whenever k ≤ candidates (the unlisted
        // −∞ rank below every listed value but a −∞ or a negative NaN, and a k-th value of −∞ or
        // NaN removes nothing); with fewer candidates than k nothing goes.
        let k = self.k.min(candidates.vocab_size());
        if k == 0 || k == candidates.vocab_size() || k > candidates.len() {
            return;
        }
        let kth = kth_largest(&mut self.scratch, candidates.logits(), k);
        // Not below kth, as the dense mask: NaN on either side keeps.
        candidates.retain(|_, x| x.partial_cmp(&kth) != Some(std::cmp::Ordering::Less));
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old computation: the k-th value by a selection over a copy of the whole row.
    fn reference(logits: &[f32], k: usize) -> Vec<f32> {
        let mut out = logits.to_vec();
        let k = k.min(out.len());
        if k == 0 || k == out.len() {
            return out;
        }
        let mut copy = out.clone();
        let kth = *copy.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a)).1;
        out.iter_mut()
            .filter(|x| **x < kth)
            .for_each(|x| *x = f32::NEG_INFINITY);
        out
    }

    #[test]
    fn group_bound_matches_a_full_selection() {
        let mut state = 1u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let cases = [
            (50257, 50, 0),
            (50257, 1, 0),
            (50257, 786, 0),
            (3000, 40, 2),
            (1000, 15, 4),
            (130, 2, 3),
        ];
        for (len, k, levels) in cases {
            let logits: Vec<f32> = (0..len)
                .map(|_| {
                    let x = next() * 8.0 - 4.0;
                    if levels > 0 {
                        (x * levels as f32).round()
                    } else {
                        x
                    }
                })
                .collect();
            let mut got = logits.clone();
            TopK::new(k, 1)
                .unwrap()
                .apply(&Context::new(&[], 0), &mut got);
            assert_eq!(got, reference(&logits, k), "len {len} k {k}");
            let mut dense = logits.clone();
            let mut candidates = Candidates::new();
            TopK::new(k, 1).unwrap().apply_and_gather(
                &Context::new(&[], 0),
                &mut dense,
                &mut candidates,
            );
            let mut gathered = Candidates::new();
            gathered.gather(&got);
            assert_eq!(candidates.ids(), gathered.ids());
            assert_eq!(candidates.logits(), gathered.logits());
        }
    }
}
