use decode_core::{Context, Error, LogitsProcessor, Result};

/// Divides every logit by `temperature` (> 0): below 1 sharpens, above 1 flattens.
#[derive(Debug, Clone)]
pub struct Temperature {
    temperature: f64,
}

impl Temperature {
    /// Refuses a temperature that is not a positive finite number.
    pub fn new(temperature: f64) -> Result<Self> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::invalid(
                "temperature",
                format!("must be a positive number, not {temperature}"),
            ));
        }
        Ok(Temperature { temperature })
    }
}

impl LogitsProcessor for Temperature {
    fn apply(&mut self, _ctx: &Context<'_>, logits: &mut [f32]) {
        let t = self.temperature as f32;
        logits.iter_mut().for_each(|x| *x /= t);
    }

    fn boxed_clone(&self) -> Box<dyn LogitsProcessor> {
        Box::new(self.clone())
    }
}
