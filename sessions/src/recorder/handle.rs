//! The recorder's handle: it creates the session file on a named writer thread, queues events
//! to that thread through a bounded channel, passes on its notices and collects its summary.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::hooks::TestHooks;
use super::memory::limit_hdf5_free_lists;
use super::plan::SessionPlan;
use super::report::{Notice, RecordSummary};
use super::writer::SessionWriter;
use crate::RunEvent;
use crate::error::{Error, Result, write_err};

/// Events the training side may run ahead of the writer before it waits.
pub const CHANNEL_CAPACITY: usize = 8192;

/// Handle to the writer thread of one session file.
pub struct Recorder {
    path: PathBuf,
    tx: Option<SyncSender<RunEvent>>,
    thread: Option<JoinHandle<Result<RecordSummary>>>,
    notices: Arc<Mutex<Vec<Notice>>>,
}

impl Recorder {
    /// Creates `path` (which must not exist yet) laid out for `plan`, and starts the writer
    /// thread. Fails before any training starts if the file cannot be created.
    pub fn create(path: &Path, plan: &SessionPlan) -> Result<Self> {
        if path.exists() {
            return Err(write_err(
                path,
                "the file exists; choose a new path (nothing is overwritten)",
            ));
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(write_err(
                path,
                format!("directory {} does not exist", parent.display()),
            ));
        }
        if path.file_name().is_none() {
            return Err(write_err(path, "not a file name"));
        }
        limit_hdf5_free_lists();
        let (tx, rx) = mpsc::sync_channel(CHANNEL_CAPACITY);
        let (ready_tx, ready_rx) = mpsc::channel();
        let owned = path.to_path_buf();
        let plan = plan.clone();
        let notices = Arc::new(Mutex::new(Vec::new()));
        let thread_notices = Arc::clone(&notices);
        let thread = std::thread::Builder::new()
            .name("wsdscope-recorder".into())
            .spawn(move || {
                let hooks = TestHooks::from_env();
                let writer = match SessionWriter::create(&owned, &plan, hooks, thread_notices) {
                    Ok(w) => {
                        let _ = ready_tx.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready_tx.send(Err(e));
                        return Err(write_err(&owned, msg));
                    }
                };
                writer.run(rx)
            })
            .map_err(|e| write_err(path, format!("cannot start the recorder thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Recorder {
                path: path.to_path_buf(),
                tx: Some(tx),
                thread: Some(thread),
                notices,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(write_err(
                path,
                "the recorder thread ended before creating the file",
            )),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues an event; waits only while the channel is full. Fails if the writer has stopped
    /// (its error is returned by [`Recorder::finish`]).
    pub fn record(&self, ev: RunEvent) -> Result<()> {
        let tx = self.tx.as_ref().expect("recorder not finished");
        tx.send(ev).map_err(|_| Error::RecorderGone {
            path: self.path.clone(),
            message: "the writer thread has stopped (see the error that follows)".into(),
        })
    }

    /// What the writer has to say since the last call: a write failing and being retried,
    /// or recovering. Empty while all is well.
    pub fn notices(&self) -> Vec<Notice> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Closes the channel, waits for the writer to write everything and close the file.
    pub fn finish(mut self) -> Result<RecordSummary> {
        self.tx.take();
        let thread = self.thread.take().expect("recorder not finished");
        let mut summary = thread
            .join()
            .unwrap_or_else(|_| Err(write_err(&self.path, "the writer thread panicked")))?;
        summary.notices = self.notices();
        Ok(summary)
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
