//! The read pool: at most 8 read-only connections at once on the blocking pool, each with a warm
//! page cache (more would open cold connections under load).

#[allow(unused_imports)]
use super::*;

/// Reads running at once. Each holds a connection with a warm page cache; more would only open
/// cold connections (parsing the schema, reading pages again) and thrash two cores.
pub(super) const READERS: usize = 8;

pub(super) struct ReaderPool {
    pub(super) path: PathBuf,
    pub(super) idle: Mutex<Vec<Connection>>,
    pub(super) permits: tokio::sync::Semaphore,
}

impl ReaderPool {
    pub(super) fn take(&self) -> StoreResult<Connection> {
        if let Some(conn) = self.idle.lock().expect("reader pool lock").pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA cache_size = -16000;")?;
        Ok(conn)
    }

    pub(super) fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().expect("reader pool lock");
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}
