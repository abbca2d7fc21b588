//! Extraction and chunking in a child process under hard limits.
//!
//! A hostile upload can make a parser hang (100,000 nested `<div>`s are
//! quadratic in html5ever), exhaust memory or overflow its stack. None of
//! that may reach the worker: per document, [`Sandbox::run`] starts
//! `hopper-extract` (the `hopper-extract` crate's binary, installed beside
//! `hopper-worker`; it does not link libtorch, so it starts in about a
//! millisecond), limits it, sends it the document over stdin and reads the
//! text and chunks from stdout (`hopper_extract::protocol`). Its limits
//! ([`ExtractLimits`], `HOPPER_EXTRACT_*`):
//!
//! - wall clock: killed (SIGKILL) and reaped after `timeout`;
//! - CPU time (`RLIMIT_CPU`): the timeout rounded up, should the worker
//!   itself be gone; the child's watchdog also exits when its parent dies;
//! - address space (`RLIMIT_AS`): `max_memory_mb`; no core dumps;
//! - PDF pages and HTML nesting: checked by the child before parsing.
//!
//! The limits are set by this process with `prlimit(2)` right after the
//! spawn and before the document is written, so the child never holds a
//! byte of it unlimited, and the spawn stays a cheap `posix_spawn` (no
//! `fork` of a worker holding a model). The child gets no environment.
//!
//! Awaiting it is asynchronous: the worker's heartbeats and other jobs go
//! on meanwhile. A document that breaks a limit fails with an error saying
//! which ([`SandboxError::is_permanent`]): the next worker would fail the
//! same way. A cancelled job kills its child; so does dropping the future
//! (`kill_on_drop`: the hard time limit, a stopped worker).

use std::{
    future::Future,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use apalis_core::error::BoxDynError;
use hopper_extract::{
    protocol::{self, Outcome, Request},
    text::ParseLimits,
};
use hopper_queue::Permanent;
use hopper_shared::{config::ExtractLimits, documents::NewChunk};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    process::{Child, Command},
};

/// Name of the child's binary, looked up beside the worker's own.
pub const PROGRAM: &str = "hopper-extract";

/// Largest reply read from a child: the text cap plus its chunk list.
const MAX_REPLY_BYTES: usize = hopper_extract::text::MAX_TEXT_BYTES * 2;
/// Tail of the child's stderr kept to explain a crash.
const STDERR_TAIL: usize = 8 << 10;

/// Runs documents through `hopper-extract`.
#[derive(Debug, Clone)]
pub struct Sandbox {
    program: PathBuf,
    model_dir: PathBuf,
    limits: ExtractLimits,
}

/// A document's text and chunks.
#[derive(Debug)]
pub struct Extracted {
    /// The extracted text.
    pub text: String,
    /// Its chunks, in order.
    pub chunks: Vec<NewChunk>,
}

/// Why a document has no chunks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SandboxError {
    /// The child refused the document (unreadable, a limit, no text).
    #[error("{0}")]
    Refused(String),
    /// The wall clock ran out.
    #[error(
        "extracting and chunking the document took longer than {} ms \
         (HOPPER_EXTRACT_TIMEOUT_MS) and was stopped",
        .0.as_millis()
    )]
    TimedOut(Duration),
    /// The address-space limit was hit.
    #[error(
        "extracting and chunking the document needed more than {0} MB of memory \
         (HOPPER_EXTRACT_MAX_MEMORY_MB) and was stopped"
    )]
    OutOfMemory(u64),
    /// The parser recursed deeper than its stack.
    #[error("the document is nested too deeply for the parser (its stack overflowed)")]
    StackOverflow,
    /// The CPU-time limit was hit.
    #[error(
        "extracting and chunking the document used more than {0} s of CPU time and was stopped"
    )]
    CpuTime(u64),
    /// The child died otherwise, or said something that does not add up.
    #[error("the extractor failed on this document: {0}")]
    Crashed(String),
    /// The job was cancelled; the child was killed.
    #[error("extraction cancelled")]
    Cancelled,
    /// The child could not be started or could not work (not the
    /// document's fault).
    #[error("the extractor is unavailable: {0}")]
    Unavailable(String),
}

impl SandboxError {
    /// Whether the document itself is at fault, so no retry can help.
    pub fn is_permanent(&self) -> bool {
        !matches!(self, SandboxError::Cancelled | SandboxError::Unavailable(_))
    }

    /// The error as a job's outcome: [`Permanent`] (dead-lettered at once)
    /// when the document is at fault, else an ordinary failed attempt.
    pub fn into_job_error(self) -> BoxDynError {
        if self.is_permanent() {
            Permanent(self.to_string()).into()
        } else {
            self.into()
        }
    }
}

impl Sandbox {
    /// A sandbox running the `hopper-extract` found beside this executable,
    /// chunking with the tokenizer in `model_dir`. Fails at start-up, not at
    /// the first document, when either is missing.
    pub fn new(model_dir: &Path, limits: ExtractLimits) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let program = exe.with_file_name(PROGRAM);
        if !program.is_file() {
            anyhow::bail!(
                "{} not found: the ingest queue extracts documents with it; install it beside {}",
                program.display(),
                exe.display()
            );
        }
        hopper_extract::chunk::TokenCounter::load(model_dir).map_err(anyhow::Error::msg)?;
        Ok(Self {
            program,
            model_dir: model_dir.to_owned(),
            limits,
        })
    }

    /// Extracts and chunks one document in a child process; gives up (and
    /// kills it) when `cancelled` resolves.
    pub async fn run(
        &self,
        content_type: &str,
        body: &[u8],
        chunk_tokens: usize,
        chunk_overlap: usize,
        cancelled: impl Future<Output = ()>,
    ) -> Result<Extracted, SandboxError> {
        let started = Instant::now();
        let mut child = Command::new(&self.program)
            .env_clear()
            .env("TOKENIZERS_PARALLELISM", "false")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                SandboxError::Unavailable(format!("cannot start {}: {e}", self.program.display()))
            })?;
        if let Err(e) = self.limit(&child) {
            let _ = child.kill().await;
            return Err(SandboxError::Unavailable(format!(
                "cannot limit the extractor: {e}"
            )));
        }
        let request = Request {
            content_type: content_type.to_owned(),
            body_len: body.len(),
            model_dir: self.model_dir.clone(),
            chunk_tokens,
            chunk_overlap,
            limits: ParseLimits {
                max_pdf_pages: self.limits.max_pdf_pages,
                max_html_depth: self.limits.max_html_depth,
            },
        };
        let finished = {
            let exchange = exchange(&mut child, request.line(), body);
            tokio::select! {
                done = tokio::time::timeout(self.limits.timeout, exchange) => Some(done.ok()),
                () = cancelled => None,
            }
        };
        let Some(finished) = finished else {
            let _ = child.kill().await;
            return Err(SandboxError::Cancelled);
        };
        let Some(exchanged) = finished else {
            let _ = child.kill().await;
            tracing::warn!(
                content_type,
                bytes = body.len(),
                "extraction stopped after {:?}",
                self.limits.timeout
            );
            return Err(SandboxError::TimedOut(self.limits.timeout));
        };
        let (status, stdout, stderr) = exchanged?;
        // Checking and copying out up to 64 MiB of text is no work for the
        // async threads that carry the heartbeats.
        let limits = self.limits;
        let stderr_tail = stderr.clone();
        let result =
            tokio::task::spawn_blocking(move || outcome(limits, status, stdout, &stderr_tail))
                .await
                .unwrap_or_else(|e| Err(SandboxError::Crashed(format!("reading the reply: {e}"))));
        match &result {
            Ok(done) => tracing::debug!(
                content_type,
                bytes = body.len(),
                chunks = done.chunks.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "extracted"
            ),
            Err(e) => tracing::warn!(
                content_type,
                bytes = body.len(),
                stderr = %stderr.trim(),
                "extraction failed: {e}"
            ),
        }
        result
    }

    /// Sets the child's resource limits.
    fn limit(&self, child: &Child) -> std::io::Result<()> {
        let pid = child
            .id()
            .ok_or_else(|| std::io::Error::other("the child has already exited"))?
            as libc::pid_t;
        let memory = self.limits.max_memory_mb << 20;
        let cpu = self.limits.timeout.as_secs() + 1;
        for (resource, soft, hard) in [
            (libc::RLIMIT_AS, memory, memory),
            // SIGXCPU at the soft limit, SIGKILL a second later.
            (libc::RLIMIT_CPU, cpu, cpu + 1),
            (libc::RLIMIT_CORE, 0, 0),
        ] {
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: a valid rlimit for our own child; no old value asked.
            if unsafe { libc::prlimit(pid, resource, &limit, std::ptr::null_mut()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// What a finished child's exit status, reply and stderr mean.
fn outcome(
    limits: ExtractLimits,
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: &str,
) -> Result<Extracted, SandboxError> {
    if status.success() {
        return match protocol::read_reply(stdout) {
            Ok(Outcome::Chunked { text, chunks }) => {
                let chunks = chunks
                    .iter()
                    .map(|s| NewChunk {
                        text: text[s.start..s.end].to_owned(),
                        tokens: s.tokens as i32,
                    })
                    .collect();
                Ok(Extracted { text, chunks })
            }
            Ok(Outcome::Refused(why)) => Err(SandboxError::Refused(why)),
            Ok(Outcome::Unavailable(why)) => Err(SandboxError::Unavailable(why)),
            Err(why) => Err(SandboxError::Crashed(why)),
        };
    }
    if stderr.contains("memory allocation of") || stderr.contains("capacity overflow") {
        return Err(SandboxError::OutOfMemory(limits.max_memory_mb));
    }
    if stderr.contains("has overflowed its stack") {
        return Err(SandboxError::StackOverflow);
    }
    Err(match status.signal() {
        Some(libc::SIGXCPU) => SandboxError::CpuTime(limits.timeout.as_secs() + 1),
        Some(signal) => SandboxError::Crashed(format!("killed by signal {signal}")),
        None => SandboxError::Crashed(format!(
            "exit status {}: {}",
            status.code().unwrap_or(-1),
            stderr.lines().last().unwrap_or("").trim()
        )),
    })
}

/// Writes the request and document to the child while reading its stdout
/// and stderr, then reaps it. Write errors are ignored: a child that stops
/// reading has died or refused, and its exit status says which.
async fn exchange(
    child: &mut Child,
    request: Vec<u8>,
    body: &[u8],
) -> Result<(ExitStatus, Vec<u8>, String), SandboxError> {
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(SandboxError::Unavailable("the child has no pipes".into()));
    };
    let write = async move {
        if stdin.write_all(&request).await.is_ok() {
            let _ = stdin.write_all(body).await;
        }
        // Dropped: the child sees the end of its input.
    };
    let mut reply = Vec::new();
    let mut stdout = stdout.take(MAX_REPLY_BYTES as u64 + 1);
    let read = stdout.read_to_end(&mut reply);
    let (_, read, stderr) = tokio::join!(write, read, tail(stderr));
    if let Err(e) = read {
        let _ = child.kill().await;
        return Err(SandboxError::Unavailable(format!("reading the reply: {e}")));
    }
    if reply.len() > MAX_REPLY_BYTES {
        let _ = child.kill().await;
        return Err(SandboxError::Crashed("the reply is too large".into()));
    }
    let status = child
        .wait()
        .await
        .map_err(|e| SandboxError::Unavailable(format!("waiting for the child: {e}")))?;
    Ok((status, reply, stderr))
}

/// The last [`STDERR_TAIL`] bytes of a stream, read to its end.
async fn tail(mut stream: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * STDERR_TAIL {
            kept.drain(..kept.len() - STDERR_TAIL);
        }
    }
    let from = kept.len().saturating_sub(STDERR_TAIL);
    String::from_utf8_lossy(&kept[from..]).into_owned()
}
