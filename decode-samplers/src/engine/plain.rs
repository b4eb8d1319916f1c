//! Plain decoding (greedy or sampling): the prompts in one left-padded prefill, then one cached
//! forward pass per token for every sequence still running.

use decode_core::{Batch, Context, LanguageModel, Result};

use super::Report;
use super::checks::{check_chosen, check_logits, log_softmax_at};
use super::output::TextDelta;
use super::sequence::{Row, StopRules, slots_needed};

/// The state of plain decoding between steps.
pub(crate) struct Plain<C> {
    /// `None` until the prefill.
    cache: Option<C>,
    /// The id padding positions hold (masked: any id of the vocabulary will do).
    pad: u32,
    scratch: Vec<f32>,
}

impl<C> Plain<C> {
    pub(crate) fn new(pad: u32) -> Self {
        Plain {
            cache: None,
            pad,
            scratch: Vec::new(),
        }
    }

    /// One forward pass (the prefill first), then one token for every running sequence.
    pub(crate) fn step<M: LanguageModel<Cache = C>>(
        &mut self,
        model: &M,
        rows: &mut [Row<'_>],
        rules: &StopRules,
        on_token: &mut dyn FnMut(TextDelta) -> bool,
    ) -> Result<Report> {
        let pad = self.pad;
        let prefill = self.cache.is_none();
        let logits = match &mut self.cache {
            None => {
                let mut cache = model.new_cache(rows.len(), slots_needed(rows))?;
                let prompts: Vec<Vec<u32>> = rows.iter().map(|r| r.tokens.clone()).collect();
                let logits = model.forward_last(&Batch::left_padded(&prompts, pad), &mut cache)?;
                self.cache = Some(cache);
                logits
            }
            Some(cache) => {
                let next: Vec<u32> = rows
                    .iter()
                    .map(|r| if r.is_done() { pad } else { r.last() })
                    .collect();
                let running: Vec<bool> = rows.iter().map(|r| !r.is_done()).collect();
                model.forward(&Batch::column_masked(&next, &running), cache)?
            }
        };
        let mut tokens = 0;
        for (i, row) in rows.iter_mut().enumerate() {
            if row.is_done() {
                continue;
            }
            let raw = logits.last(i);
            let step = row.step();
            check_logits(raw, step, i)?;
            self.scratch.clear();
            self.scratch.extend_from_slice(raw);
            let ctx = Context::new(&row.tokens, row.prompt_len);
            let id = row.chain.sample(&ctx, &mut self.scratch);
            check_chosen(&self.scratch, id, step, i)?;
            row.push(i, id, log_softmax_at(raw, id), rules, on_token)?;
            tokens += 1;
        }
        Ok(Report {
            prefill,
            forward_calls: 1,
            tokens,
        })
    }
}
