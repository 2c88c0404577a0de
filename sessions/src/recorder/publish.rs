//! The session file's life on disk: built whole under a hidden partial name, switched to SWMR
//! mode, published under its real name by a hard link while the writer holds its liveness
//! lock, and closed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use hdf5::{File, Location};

use super::columns::{Col, put, put_str};
use super::flush::identity;
use super::hooks::{PausePoint, TestHooks};
use super::memory::{CHUNK_CACHE_BYTES, CHUNK_CACHE_SLOTS, metadata_cache};
use super::plan::SessionPlan;
use super::report::Notice;
use super::tables::{ProbeTable, create_slot};
use super::writer::SessionWriter;
use crate::EVENT_SCHEMA_VERSION;
use crate::error::{Result, write_err};
use crate::layout::{
    DEFLATE, EVENTS, FORMAT_VERSION, MAX_CHUNK_BYTES, PROBES, RUN_IDS, RUN_SLOTS, RUNS,
};
use crate::liveness::WriterLock;
use crate::vocabulary::PROBES as PROBE_KINDS;

impl SessionWriter {
    /// Builds the whole file under a temporary name, enters SWMR mode, and only then gives it
    /// its real name (refusing to replace an existing file).
    pub(super) fn create(
        path: &Path,
        plan: &SessionPlan,
        hooks: TestHooks,
        notices: Arc<Mutex<Vec<Notice>>>,
    ) -> Result<Self> {
        let name = path
            .file_name()
            .expect("checked by Recorder::create")
            .to_string_lossy()
            .into_owned();
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        remove_stale_partials(dir, &name);
        let tmp = dir.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let built = Self::build(&tmp, path, plan, hooks, notices);
        let mut w = match built {
            Ok(w) => w,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        // SWMR is on and everything is flushed: hold the liveness lock, then publish.
        let published = WriterLock::acquire(&tmp)
            .map_err(|e| write_err(path, format!("cannot lock the new file: {e}")))
            .and_then(|lock| {
                std::fs::hard_link(&tmp, path).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        write_err(
                            path,
                            "the file exists; choose a new path (nothing is overwritten)",
                        )
                    } else {
                        write_err(path, format!("cannot create it: {e}"))
                    }
                })?;
                Ok(lock)
            });
        let _ = std::fs::remove_file(&tmp);
        w._lock = Some(published?);
        w.identity = identity(path);
        Ok(w)
    }

    fn build(
        tmp: &Path,
        path: &Path,
        plan: &SessionPlan,
        hooks: TestHooks,
        notices: Arc<Mutex<Vec<Notice>>>,
    ) -> Result<Self> {
        let err = |e: hdf5::Error| write_err(path, e);
        let file = File::with_options()
            .with_fapl(|p| {
                p.libver_v110()
                    .chunk_cache(CHUNK_CACHE_SLOTS, CHUNK_CACHE_BYTES, 1.0)
                    .mdc_config(&metadata_cache())
            })
            .create_excl(tmp)
            .map_err(err)?;
        let root: &Location = &file;
        put(root, "format_version", FORMAT_VERSION).map_err(err)?;
        put(root, "event_schema_version", EVENT_SCHEMA_VERSION).map_err(err)?;
        put_str(
            root,
            "producer",
            concat!("wsdscope ", env!("CARGO_PKG_VERSION")),
        )
        .map_err(err)?;
        put_str(root, "created", &iso_now()).map_err(err)?;
        put_str(root, "config", &plan.config.to_string()).map_err(err)?;
        put(root, RUN_SLOTS, plan.runs).map_err(err)?;
        file.new_dataset::<u8>()
            .chunk(MAX_CHUNK_BYTES)
            .deflate(DEFLATE)
            .shape(0..)
            .create(EVENTS)
            .map_err(err)?;
        file.new_dataset::<u32>()
            .chunk(1 << 10)
            .shape(0..)
            .create(RUN_IDS)
            .map_err(err)?;
        let runs = file.create_group(RUNS).map_err(err)?;
        for id in 0..plan.runs {
            if id == plan.runs / 2 && hooks.pause == Some(PausePoint::Create) {
                file.flush().map_err(err)?;
                TestHooks::pause(PausePoint::Create, 0);
            }
            create_slot(&runs, id, plan.widths).map_err(err)?;
        }
        drop(runs);
        let probes = file.create_group(PROBES).map_err(err)?;
        let tables = PROBE_KINDS
            .iter()
            .map(|spec| ProbeTable::create(&probes, spec))
            .collect::<hdf5::Result<Vec<_>>>()
            .map_err(err)?;
        let events = Col::open(&file, EVENTS).map_err(err)?;
        let run_ids = Col::open(&file, RUN_IDS).map_err(err)?;
        file.flush().map_err(err)?;
        // From here on the writer only appends (a run's slot is opened when it starts).
        file.start_swmr().map_err(err)?;
        file.flush().map_err(err)?;
        Ok(SessionWriter {
            path: path.to_path_buf(),
            file: Some(file),
            events,
            run_ids,
            slots: (0..plan.runs).map(|_| None).collect(),
            taken: vec![None; plan.runs as usize],
            ended: Vec::new(),
            slot_widths: plan.widths,
            probes: tables,
            seq: 0,
            durable_seq: 0,
            identity: None,
            max_growth: 0,
            stopping: None,
            hooks,
            pause_in_flush: None,
            notices,
            _lock: None,
        })
    }
    pub(super) fn close(mut self) -> Result<()> {
        self.slots.clear();
        self.probes.clear();
        let SessionWriter {
            path,
            file,
            events,
            run_ids,
            _lock,
            ..
        } = self;
        drop((events, run_ids));
        if let Some(f) = file {
            f.close().map_err(|e| write_err(&path, e))?;
        }
        drop(_lock);
        Ok(())
    }
}

/// Removes `.NAME.partial-PID` files that a recorder killed while building `NAME` left
/// behind (their process is gone).
fn remove_stale_partials(dir: &Path, name: &str) {
    let prefix = format!(".{name}.partial-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = file_name
            .strip_prefix(&prefix)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ` (the session's `created`).
pub fn iso_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(crate::layout::CREATED_FORMAT)
        .unwrap_or_default()
}
