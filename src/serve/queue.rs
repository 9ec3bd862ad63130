//! The durable job queue of `pare serve`: SQLite in WAL mode, so an event is acknowledged only
//! once its job is on disk. A job is one (source digest, destination, recipe): a second
//! announcement of the same push adds nothing. A job left running by a crash is queued again
//! when the queue is opened; a failed attempt is retried later (doubling waits) and then
//! marked failed with its error.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Queued,
    Running,
    Done,
    /// Not hardened, and why (in `error`): the image is one pare wrote.
    Skipped,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Done => "done",
            State::Skipped => "skipped",
            State::Failed => "failed",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "running" => State::Running,
            "done" => State::Done,
            "skipped" => State::Skipped,
            "failed" => State::Failed,
            _ => State::Queued,
        }
    }
}

/// One job as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Job {
    pub id: i64,
    /// The source image, pinned: `HOST/REPO:TAG@sha256:…`.
    pub source: String,
    pub digest: String,
    pub dest: String,
    pub recipe: String,
    pub state: State,
    pub attempts: u32,
    pub error: Option<String>,
}

/// Seconds before the first retry; each later one waits twice as long, at most [`MAX_WAIT`].
const FIRST_WAIT: i64 = 5;
const MAX_WAIT: i64 = 600;

/// Skipped events remembered (the oldest are forgotten).
const MAX_SKIPS: i64 = 10_000;

/// What one event asks the queue to remember.
#[derive(Debug, Clone)]
pub enum Entry {
    Job {
        source: String,
        digest: String,
        dest: String,
    },
    Skip {
        what: String,
        reason: String,
    },
}

pub struct Queue {
    db: Mutex<Connection>,
}

fn sql(e: rusqlite::Error) -> Error {
    Error::Other(format!("job queue: {e}"))
}

impl Queue {
    /// Open (or create) `dir/queue.sqlite`; jobs a crash left running are queued again.
    pub fn open(dir: &Path) -> Result<Self> {
        let q = Self::open_read(dir)?;
        q.requeue_running(false)?;
        Ok(q)
    }

    /// Open `dir/queue.sqlite` to read it beside a running service (nothing requeued).
    pub fn open_read(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let conn = Connection::open(dir.join("queue.sqlite")).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS jobs (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                source TEXT NOT NULL, digest TEXT NOT NULL, dest TEXT NOT NULL,
                recipe TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'queued',
                attempts INTEGER NOT NULL DEFAULT 0, next_try INTEGER NOT NULL DEFAULT 0,
                error TEXT, added INTEGER NOT NULL, UNIQUE (digest, dest, recipe));
             CREATE INDEX IF NOT EXISTS jobs_todo ON jobs (state, next_try, id);
             CREATE TABLE IF NOT EXISTS skips (
                id INTEGER PRIMARY KEY AUTOINCREMENT, what TEXT NOT NULL,
                reason TEXT NOT NULL, at INTEGER NOT NULL);",
        )
        .map_err(sql)?;
        Ok(Queue {
            db: Mutex::new(conn),
        })
    }

    fn db(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Store a job unless the same (digest, destination, recipe) is stored already; whether
    /// it was added.
    pub fn add(
        &self,
        source: &str,
        digest: &str,
        dest: &str,
        recipe: &str,
        now: i64,
    ) -> Result<bool> {
        let job = Entry::Job {
            source: source.into(),
            digest: digest.into(),
            dest: dest.into(),
        };
        Ok(self.store(&[job], recipe, now)?.first() == Some(&true))
    }

    /// One request's events in one transaction: each job stored unless stored already
    /// (whether it was added, in order), each skip recorded.
    pub fn store(&self, entries: &[Entry], recipe: &str, now: i64) -> Result<Vec<bool>> {
        let mut db = self.db();
        let tx = db.transaction().map_err(sql)?;
        let mut added = Vec::with_capacity(entries.len());
        for e in entries {
            match e {
                Entry::Job {
                    source,
                    digest,
                    dest,
                } => {
                    let n = tx
                        .execute(
                            "INSERT OR IGNORE INTO jobs (source, digest, dest, recipe, added)
                             VALUES (?1, ?2, ?3, ?4, ?5)",
                            params![source, digest, dest, recipe, now],
                        )
                        .map_err(sql)?;
                    added.push(n == 1);
                }
                Entry::Skip { what, reason } => {
                    tx.execute(
                        "INSERT INTO skips (what, reason, at) VALUES (?1, ?2, ?3)",
                        params![what, reason, now],
                    )
                    .map_err(sql)?;
                    added.push(false);
                }
            }
        }
        // The skips are a log: the newest [`MAX_SKIPS`] are kept.
        tx.execute(
            "DELETE FROM skips WHERE id <= (SELECT MAX(id) FROM skips) - ?1",
            params![MAX_SKIPS],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(added)
    }

    /// Record an event that started no job, and why.
    pub fn skip(&self, what: &str, reason: &str, now: i64) -> Result<()> {
        let skip = Entry::Skip {
            what: what.into(),
            reason: reason.into(),
        };
        self.store(&[skip], "", now).map(drop)
    }

    /// The oldest queued job due at `now`, marked running (one attempt more). A job that has
    /// had `max_attempts` already without an outcome (the service died during each: a crash,
    /// an OOM kill) is failed instead, so one image cannot stop the service for good.
    pub fn take(&self, now: i64, max_attempts: u32) -> Result<Option<Job>> {
        let mut db = self.db();
        let tx = db.transaction().map_err(sql)?;
        loop {
            let next: Option<(i64, u32)> = tx
                .query_row(
                    "SELECT id, attempts FROM jobs WHERE state = 'queued' AND next_try <= ?1
                     ORDER BY id LIMIT 1",
                    params![now],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql)?;
            let Some((id, attempts)) = next else {
                tx.commit().map_err(sql)?;
                return Ok(None);
            };
            if attempts >= max_attempts {
                tx.execute(
                    "UPDATE jobs SET state = 'failed', error = ?2 WHERE id = ?1",
                    params![
                        id,
                        format!(
                            "the service stopped during each of its {attempts} attempts (a crash or an out-of-memory kill?)"
                        )
                    ],
                )
                .map_err(sql)?;
                continue;
            }
            tx.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1 WHERE id = ?1",
                params![id],
            )
            .map_err(sql)?;
            let job = get(&tx, id)?;
            tx.commit().map_err(sql)?;
            return Ok(job);
        }
    }

    pub fn done(&self, id: i64) -> Result<()> {
        self.set(
            id,
            "UPDATE jobs SET state = 'done', error = NULL WHERE id = ?1",
        )
    }

    /// A job found to need no work, and why.
    pub fn skipped(&self, id: i64, why: &str) -> Result<()> {
        self.db()
            .execute(
                "UPDATE jobs SET state = 'skipped', error = ?2 WHERE id = ?1",
                params![id, why],
            )
            .map_err(sql)?;
        Ok(())
    }

    /// The most recent skipped events (newest first): what, why, when.
    pub fn skips(&self, limit: usize) -> Result<Vec<(String, String, i64)>> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT what, reason, at FROM skips ORDER BY id DESC LIMIT ?1")
            .map_err(sql)?;
        let rows = st
            .query_map(params![limit as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(sql)?;
        rows.collect::<std::result::Result<_, _>>().map_err(sql)
    }

    /// When the next queued job is due (seconds), if any is queued.
    pub fn next_due(&self) -> Result<Option<i64>> {
        self.db()
            .query_row(
                "SELECT MIN(next_try) FROM jobs WHERE state = 'queued'",
                [],
                |r| r.get(0),
            )
            .map_err(sql)
    }

    /// A failed attempt: queued again after a wait that doubles with each attempt, or failed
    /// for good after `max_attempts`. Returns the job's new state.
    pub fn failed(&self, id: i64, error: &str, now: i64, max_attempts: u32) -> Result<State> {
        let db = self.db();
        let attempts: u32 = db
            .query_row(
                "SELECT attempts FROM jobs WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .map_err(sql)?;
        let state = if attempts >= max_attempts {
            State::Failed
        } else {
            State::Queued
        };
        let wait = (FIRST_WAIT << attempts.saturating_sub(1).min(20)).min(MAX_WAIT);
        db.execute(
            "UPDATE jobs SET state = ?2, error = ?3, next_try = ?4 WHERE id = ?1",
            params![id, state.as_str(), error, now + wait],
        )
        .map_err(sql)?;
        Ok(state)
    }

    /// Running jobs put back in the queue. At a shutdown that could not finish them the
    /// attempt is given back (`refund`: the job did not fail, the service stopped); after a
    /// crash it counts.
    pub fn requeue_running(&self, refund: bool) -> Result<usize> {
        let statement = if refund {
            "UPDATE jobs SET state = 'queued', attempts = MAX(attempts - 1, 0) WHERE state = 'running'"
        } else {
            "UPDATE jobs SET state = 'queued' WHERE state = 'running'"
        };
        self.db().execute(statement, []).map_err(sql)
    }

    /// Every job, oldest first.
    pub fn list(&self) -> Result<Vec<Job>> {
        let db = self.db();
        let mut st = db
            .prepare(
                "SELECT id, source, digest, dest, recipe, state, attempts, error FROM jobs
                 ORDER BY id",
            )
            .map_err(sql)?;
        let rows = st.query_map([], row).map_err(sql)?;
        rows.collect::<std::result::Result<Vec<_>, _>>()
            .map_err(sql)
    }

    /// How many jobs are in each state.
    pub fn counts(&self) -> Result<std::collections::BTreeMap<State, u64>> {
        let db = self.db();
        let mut st = db
            .prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .map_err(sql)?;
        let rows = st
            .query_map([], |r| {
                let n: i64 = r.get(1)?;
                Ok((State::parse(&r.get::<_, String>(0)?), n.max(0) as u64))
            })
            .map_err(sql)?;
        rows.collect::<std::result::Result<_, _>>().map_err(sql)
    }

    fn set(&self, id: i64, statement: &str) -> Result<()> {
        self.db().execute(statement, params![id]).map_err(sql)?;
        Ok(())
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        source: r.get(1)?,
        digest: r.get(2)?,
        dest: r.get(3)?,
        recipe: r.get(4)?,
        state: State::parse(&r.get::<_, String>(5)?),
        attempts: r.get(6)?,
        error: r.get(7)?,
    })
}

fn get(c: &Connection, id: i64) -> Result<Option<Job>> {
    c.query_row(
        "SELECT id, source, digest, dest, recipe, state, attempts, error FROM jobs WHERE id = ?1",
        params![id],
        row,
    )
    .optional()
    .map_err(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:4f98543ac6f792c1352e8c5a0555601ab3fd3497810581606c36c7416c5ffe37";

    #[test]
    fn a_job_is_stored_once_and_taken_once() {
        let d = tempfile::tempdir().unwrap();
        let q = Queue::open(d.path()).unwrap();
        assert!(q.add("r/a:1@x", D, "r/a:1-hardened", "v1", 0).unwrap());
        assert!(!q.add("r/a:1@x", D, "r/a:1-hardened", "v1", 1).unwrap());
        assert!(q.add("r/a:1@x", D, "r/a:1-hardened", "v2", 2).unwrap());
        let j = q.take(10, 10).unwrap().unwrap();
        assert_eq!(
            (j.state, j.attempts, j.recipe.as_str()),
            (State::Running, 1, "v1")
        );
        let k = q.take(10, 10).unwrap().unwrap();
        assert_ne!(j.id, k.id);
        assert!(q.take(10, 10).unwrap().is_none());
        q.done(j.id).unwrap();
        let counts = q.counts().unwrap();
        assert_eq!(counts.get(&State::Done), Some(&1));
        assert_eq!(counts.get(&State::Running), Some(&1));
    }

    #[test]
    fn a_crash_leaves_nothing_running_and_failures_back_off_then_fail() {
        let d = tempfile::tempdir().unwrap();
        let id = {
            let q = Queue::open(d.path()).unwrap();
            q.add("r/a:1@x", D, "dest", "v1", 0).unwrap();
            q.take(0, 10).unwrap().unwrap().id
            // Dropped while running: as a kill -9 would leave it.
        };
        let q = Queue::open(d.path()).unwrap();
        assert_eq!(q.list().unwrap()[0].state, State::Queued);
        let j = q.take(0, 10).unwrap().unwrap();
        assert_eq!((j.id, j.attempts), (id, 2));
        // Attempt 2 of 3 fails: queued again, not before its wait.
        assert_eq!(
            q.failed(id, "registry down", 100, 3).unwrap(),
            State::Queued
        );
        assert!(q.take(100, 10).unwrap().is_none());
        let j = q.take(100 + MAX_WAIT, 10).unwrap().unwrap();
        assert_eq!(j.attempts, 3);
        assert_eq!(q.failed(id, "still down", 1000, 3).unwrap(), State::Failed);
        let all = q.list().unwrap();
        assert_eq!(all[0].state, State::Failed);
        assert_eq!(all[0].error.as_deref(), Some("still down"));
        assert!(q.take(i64::MAX / 2, 10).unwrap().is_none());
        q.skip("r/a:1-hardened", "a tag pare writes", 5).unwrap();
        q.skip("r/b:1-hardened", "a tag pare writes", 6).unwrap();
        let s = q.skips(1).unwrap();
        assert_eq!(
            s,
            vec![("r/b:1-hardened".into(), "a tag pare writes".into(), 6)]
        );
        assert_eq!(q.next_due().unwrap(), None);
        assert!(q.add("r/c:1@x", D, "dest-c", "v1", 7).unwrap());
        assert_eq!(q.next_due().unwrap(), Some(0));
        let j = q.take(8, 10).unwrap().unwrap();
        q.skipped(j.id, "pare wrote it").unwrap();
        let c = q.counts().unwrap();
        assert_eq!(c.get(&State::Skipped), Some(&1));
        // A job the service died in at every attempt is failed, not taken again; one a
        // shutdown interrupted gets its attempt back.
        assert!(q.add("r/e:1@x", D, "dest-e", "v1", 8).unwrap());
        for _ in 0..2 {
            assert!(q.take(8, 2).unwrap().is_some());
            q.requeue_running(false).unwrap();
        }
        assert!(q.take(8, 2).unwrap().is_none());
        let e = q
            .list()
            .unwrap()
            .into_iter()
            .find(|j| j.dest == "dest-e")
            .unwrap();
        assert_eq!(e.state, State::Failed);
        assert!(e.error.unwrap().contains("2 attempts"));
        assert!(q.add("r/f:1@x", D, "dest-f", "v1", 8).unwrap());
        for _ in 0..5 {
            assert!(q.take(8, 2).unwrap().is_some());
            q.requeue_running(true).unwrap();
        }
        let f = q
            .list()
            .unwrap()
            .into_iter()
            .find(|j| j.dest == "dest-f")
            .unwrap();
        assert_eq!((f.state, f.attempts), (State::Queued, 0));
        // A request's events in one transaction; a job stored twice is added once.
        let job = Entry::Job {
            source: "r/d:1@x".into(),
            digest: D.into(),
            dest: "r/d:1-hardened".into(),
        };
        let skip = Entry::Skip {
            what: "r/d blob".into(),
            reason: "a blob".into(),
        };
        let got = q.store(&[job.clone(), skip, job], "v1", 9).unwrap();
        assert_eq!(got, vec![true, false, false]);
        assert_eq!(q.skips(10).unwrap().len(), 3);
    }
}
