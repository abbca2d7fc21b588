//! The `hopper-extract` process: reads one [`Request`] and its document
//! from stdin, extracts and chunks it, writes the [`Outcome`] to stdout and
//! exits.
//!
//! It runs under the limits its parent sets right after starting it and
//! before sending the document (address space, CPU time, no core dumps; the
//! wall clock is the parent's to watch). The work runs on a thread with a
//! [`STACK_BYTES`] stack, so the recursion the nesting limit allows fits; a
//! panic there becomes a refusal of the document. Whatever kills the process
//! (the memory limit, a stack overflow) shows in its exit status and stderr,
//! which the parent reads. A watchdog thread exits if the parent goes away,
//! so a killed worker leaves no extraction running.
//!
//! The process inherits no environment and no descriptors but its three
//! pipes: a parser bug it is tricked into cannot read the worker's secrets.

use std::{io::Write, thread, time::Duration};

use crate::{
    chunk::{self, TokenCounter},
    protocol::{self, Outcome, Request},
    text::{self, ExtractError},
};

/// Stack of the thread that parses and chunks.
pub const STACK_BYTES: usize = 256 << 20;

/// Runs the child; returns its exit code (0 once a reply is written).
pub fn run() -> i32 {
    watch_parent();
    let (request, body) = match protocol::read_request(&mut std::io::stdin().lock()) {
        Ok(read) => read,
        Err(e) => {
            eprintln!("hopper-extract: {e}");
            return 2;
        }
    };
    let outcome = work(request, body);
    let mut out = std::io::stdout().lock();
    match protocol::write_reply(&mut out, &outcome).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hopper-extract: cannot write the reply: {e}");
            3
        }
    }
}

fn work(request: Request, body: Vec<u8>) -> Outcome {
    let counter = match TokenCounter::load(&request.model_dir) {
        Ok(c) => c,
        Err(e) => return Outcome::Unavailable(e),
    };
    let worker = thread::Builder::new()
        .name("extract".into())
        .stack_size(STACK_BYTES)
        .spawn(move || {
            let text = text::extract(&request.content_type, &body, &request.limits)
                .map_err(|e| e.to_string())?;
            drop(body);
            let chunks = chunk::chunk(
                &text,
                request.content_type == "text/markdown",
                &counter,
                request.chunk_tokens,
                request.chunk_overlap,
            )?;
            if chunks.is_empty() {
                return Err(ExtractError::Empty.to_string());
            }
            Ok((text, chunks))
        });
    let worker = match worker {
        Ok(w) => w,
        Err(e) => return Outcome::Unavailable(format!("cannot start the extraction thread: {e}")),
    };
    match worker.join() {
        Ok(Ok((text, chunks))) => Outcome::Chunked { text, chunks },
        Ok(Err(error)) => Outcome::Refused(error),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Outcome::Refused(format!("the extractor failed on this document: {why}"))
        }
    }
}

/// Exits when the parent that started this process is gone.
fn watch_parent() {
    // SAFETY: getppid has no preconditions and cannot fail.
    let parent = unsafe { libc::getppid() };
    let _ = thread::Builder::new()
        .name("watchdog".into())
        .stack_size(64 << 10)
        .spawn(move || {
            loop {
                thread::sleep(Duration::from_millis(200));
                // SAFETY: as above.
                if unsafe { libc::getppid() } != parent {
                    std::process::exit(4);
                }
            }
        });
}
