//! Token ids as text: what the generation engine needs from a tokenizer ([`TokenText`]) to stream
//! text and honour stop strings, and a UTF-8-safe streaming decoder over it ([`StreamDecoder`]).

use crate::Result;

/// The text of token ids, as the generation engine sees a tokenizer: the bytes each id stands for
/// (a byte-level BPE token may hold part of a UTF-8 character).
pub trait TokenText: Sync {
    /// The bytes token `id` stands for; an error for an id the tokenizer does not have.
    fn token_bytes(&self, id: u32) -> Result<&[u8]>;

    /// Checks that this tokenizer can serve a model of `vocab_size` ids, before anything is
    /// generated (the default accepts any model).
    fn check_against(&self, _vocab_size: usize) -> Result<()> {
        Ok(())
    }
}

/// Turns a stream of ids into text, emitting only whole UTF-8 characters: a character whose bytes
/// span several tokens (emoji, CJK) comes out once its last byte has arrived.
pub struct StreamDecoder<'a> {
    text: &'a dyn TokenText,
    pending: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder reading each id's bytes from `text`.
    pub fn new(text: &'a dyn TokenText) -> Self {
        StreamDecoder {
            text,
            pending: Vec::new(),
        }
    }

    /// Adds one id; returns the text it completes (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.pending.extend_from_slice(self.text.token_bytes(id)?);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return Ok(out);
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // Safe: `valid_up_to` bytes were just checked.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // Incomplete character at the end: wait for the next id.
                        None => {
                            self.pending.drain(..valid);
                            return Ok(out);
                        }
                        // Bytes that can never become a character: emit U+FFFD, as decode does.
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Flushes what is left (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        text
    }
}

impl std::fmt::Debug for StreamDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder")
            .field("pending", &self.pending)
            .finish()
    }
}
