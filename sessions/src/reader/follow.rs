//! Following a session that is still growing: re-reading its event log and run table, and
//! telling whether its writer is still alive.

use super::session::{Session, damaged};
use crate::RunEvent;
use crate::error::Result;
use crate::layout::EVENTS;

impl Session {
    /// Whether a recorder is writing this session now (see [`crate::liveness`]):
    /// `Some(false)` once it has finished or died, `None` where this cannot be told.
    pub fn writer_alive(&self) -> Option<bool> {
        if self.recovered.is_some() {
            return Some(false);
        }
        crate::liveness::writer_alive(&self.path)
    }

    /// Re-reads the event log and dataset lengths (for a session that is still growing).
    pub fn refresh(&mut self) -> Result<()> {
        let path = self.path.clone();
        let events = self.file.dataset(EVENTS).map_err(|e| damaged(&path, e))?;
        let _ = events.refresh();
        let bytes: Vec<u8> = events.read_raw().map_err(|e| damaged(&path, e))?;
        let mut log = Vec::new();
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            #[derive(serde::Deserialize)]
            struct Entry {
                seq: u64,
                event: RunEvent,
            }
            match serde_json::from_slice::<Entry>(line) {
                Ok(e) => log.push((e.seq, e.event)),
                Err(e) => return Err(damaged(&path, format!("event log entry unreadable: {e}"))),
            }
        }
        let mut runs = Vec::new();
        for (_, ev) in &log {
            if let RunEvent::RunStart(s) = ev {
                runs.push(self.run_info(s)?);
            }
        }
        for (_, ev) in &log {
            if let RunEvent::End {
                run,
                reason,
                message,
                final_val_loss,
                wall_s,
                ..
            } = ev
                && let Some(r) = runs.iter_mut().find(|r| r.id == *run)
            {
                r.end = Some((*reason, message.clone()));
                r.wall_s = Some(*wall_s);
                if r.final_val_loss.is_none() {
                    r.final_val_loss = *final_val_loss;
                }
            }
        }
        self.log = log;
        self.runs = runs;
        Ok(())
    }
}
