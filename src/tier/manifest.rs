//! The durable record of which chunks are tiered:
//! `.chunkbus/tier-manifest.log`, one CRC-protected line per change,
//! fdatasync'd before the local copy of a chunk is removed.
//!
//! ```text
//! <crc32c 8 hex> + <category> <chunk> <size> <messages> <object_len> <key id hex> [<header sha256 hex>]\n
//! <crc32c 8 hex> - <category> <chunk>\n
//! ```
//! The header digest binds the entry to the very object uploaded; entries
//! written before format 2 have none. The CRC32C covers the text after the
//! first space. Loading stops at the
//! first torn or corrupt line (and cuts the file there). This module never
//! touches chunk files or the object store.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::fsutil;
use crate::names::{Category, ChunkName};

/// File name inside `.chunkbus/tier/`.
pub const MANIFEST_FILE: &str = "tier-manifest.log";

/// What is known of one tiered chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TieredChunk {
    /// Chunk size (message bytes).
    pub size: u64,
    /// Messages in it.
    pub messages: u64,
    /// Object size in the store.
    pub object_len: u64,
    /// Id of the key it was written with.
    pub key_id: [u8; 8],
    /// SHA-256 of the object's header (format 2); None for entries
    /// recorded before format 2, whose objects are upgraded.
    pub header_digest: Option<[u8; 32]>,
}

/// An I/O failure of the manifest, naming the file or directory.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct ManifestError {
    /// What was being done.
    pub op: &'static str,
    /// The manifest file (or its directory).
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl ManifestError {
    fn io<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> Self + 'p {
        move |source| Self {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Tiered chunks by category, then chunk (nested, so a lookup borrows
/// the names instead of cloning them).
type Entries = BTreeMap<Category, BTreeMap<ChunkName, TieredChunk>>;

/// The tiered set, mirrored in the append log.
#[derive(Debug)]
pub struct Manifest {
    path: PathBuf,
    inner: Mutex<(File, Entries)>,
}

fn line(body: &str) -> String {
    format!("{:08x} {body}\n", crc32c::crc32c(body.as_bytes()))
}

/// Parses `n` bytes of lowercase or uppercase hex.
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

fn parse_line(l: &str) -> Option<(bool, Category, ChunkName, Option<TieredChunk>)> {
    let (crc, body) = l.split_once(' ')?;
    if u32::from_str_radix(crc, 16).ok()? != crc32c::crc32c(body.as_bytes()) {
        return None;
    }
    let mut f = body.split(' ');
    let op = f.next()?;
    let cat = Category::parse(f.next()?).ok()?;
    let chunk = ChunkName::parse(f.next()?).ok()?;
    match op {
        "-" => Some((false, cat, chunk, None)),
        "+" => {
            let size = f.next()?.parse().ok()?;
            let messages = f.next()?.parse().ok()?;
            let object_len = f.next()?.parse().ok()?;
            let key_id = unhex::<8>(f.next()?)?;
            let header_digest = match f.next() {
                None => None,
                Some(d) => Some(unhex::<32>(d)?),
            };
            if f.next().is_some() {
                return None;
            }
            Some((
                true,
                cat,
                chunk,
                Some(TieredChunk {
                    size,
                    messages,
                    object_len,
                    key_id,
                    header_digest,
                }),
            ))
        }
        _ => None,
    }
}

fn remove(map: &mut Entries, cat: &Category, chunk: &ChunkName) {
    if let Some(chunks) = map.get_mut(cat) {
        chunks.remove(chunk);
        if chunks.is_empty() {
            map.remove(cat);
        }
    }
}

impl Manifest {
    /// Loads (creating if missing) the manifest in `dir`.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn open(dir: &Path) -> Result<Self, ManifestError> {
        fsutil::create_dir_durable(dir).map_err(ManifestError::io("create", dir))?;
        let path = dir.join(MANIFEST_FILE);
        let mut created = false;
        let text = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                created = true;
                Vec::new()
            }
            Err(e) => return Err(ManifestError::io("read", &path)(e)),
        };
        let mut map = Entries::new();
        let mut valid = 0usize;
        for raw in text.split_inclusive(|&b| b == b'\n') {
            let Some(l) = raw
                .strip_suffix(b"\n")
                .and_then(|l| std::str::from_utf8(l).ok())
            else {
                break;
            };
            let Some((add, cat, chunk, entry)) = parse_line(l) else {
                break;
            };
            match (add, entry) {
                (true, Some(e)) => {
                    map.entry(cat).or_default().insert(chunk, e);
                }
                _ => remove(&mut map, &cat, &chunk),
            }
            valid += raw.len();
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ManifestError::io("open", &path))?;
        if created {
            // Each line's fdatasync covers the file, not its name: without
            // this, a crash could keep an eviction but lose the manifest.
            fsutil::fsync_dir(dir).map_err(ManifestError::io("fsync", dir))?;
        }
        if valid != text.len() {
            tracing::warn!(path = %path.display(), kept = valid, "cut torn tail of the tier manifest");
            file.set_len(valid as u64)
                .map_err(ManifestError::io("trim", &path))?;
        }
        let mut file = file;
        std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))
            .map_err(ManifestError::io("seek", &path))?;
        Ok(Self {
            path,
            inner: Mutex::new((file, map)),
        })
    }

    fn append(&self, file: &mut File, text: &str) -> Result<(), ManifestError> {
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(ManifestError::io("append to", &self.path))
    }

    /// Records a chunk as tiered, durably.
    ///
    /// # Errors
    /// The append or its fdatasync failed (the chunk then stays local).
    pub fn add(
        &self,
        cat: &Category,
        chunk: &ChunkName,
        e: TieredChunk,
    ) -> Result<(), ManifestError> {
        let mut g = self.inner.lock();
        let mut body = format!(
            "+ {cat} {chunk} {} {} {} {}",
            e.size,
            e.messages,
            e.object_len,
            super::keys::hex(&e.key_id)
        );
        if let Some(d) = &e.header_digest {
            body.push(' ');
            body.push_str(&super::keys::hex(d));
        }
        self.append(&mut g.0, &line(&body))?;
        g.1.entry(cat.clone()).or_default().insert(chunk.clone(), e);
        Ok(())
    }

    /// Records that a tiered chunk's object was deleted.
    ///
    /// # Errors
    /// The append failed (the removal is retried).
    pub fn remove(&self, cat: &Category, chunk: &ChunkName) -> Result<(), ManifestError> {
        let mut g = self.inner.lock();
        self.append(&mut g.0, &line(&format!("- {cat} {chunk}")))?;
        remove(&mut g.1, cat, chunk);
        Ok(())
    }

    /// The entry of a chunk, if tiered.
    #[must_use]
    pub fn get(&self, cat: &Category, chunk: &ChunkName) -> Option<TieredChunk> {
        self.inner.lock().1.get(cat)?.get(chunk).copied()
    }

    /// The first entry (in name order) recorded before format 2 (without
    /// a header digest) that `pick` accepts.
    #[must_use]
    pub fn first_unbound(
        &self,
        mut pick: impl FnMut(&Category, &ChunkName) -> bool,
    ) -> Option<(Category, ChunkName, TieredChunk)> {
        let g = self.inner.lock();
        g.1.iter().find_map(|(c, chunks)| {
            chunks.iter().find_map(|(n, e)| {
                (e.header_digest.is_none() && pick(c, n)).then(|| (c.clone(), n.clone(), *e))
            })
        })
    }

    /// Every tiered chunk.
    #[must_use]
    pub fn all(&self) -> Vec<(Category, ChunkName, TieredChunk)> {
        self.inner
            .lock()
            .1
            .iter()
            .flat_map(|(c, chunks)| chunks.iter().map(move |(n, e)| (c.clone(), n.clone(), *e)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survives_reopen_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let cat = Category::parse("c").unwrap();
        let a = ChunkName::parse("n1-chunk000000001").unwrap();
        let b = ChunkName::parse("n1-chunk000000002").unwrap();
        let e = TieredChunk {
            size: 10,
            messages: 2,
            object_len: 99,
            key_id: [0xab; 8],
            header_digest: None,
        };
        let bound = TieredChunk {
            header_digest: Some([0xcd; 32]),
            ..e
        };
        {
            let m = Manifest::open(dir.path()).unwrap();
            m.add(&cat, &a, e).unwrap();
            m.add(&cat, &b, e).unwrap();
            m.remove(&cat, &a).unwrap();
            m.add(&cat, &b, bound).unwrap();
        }
        let path = dir.path().join(MANIFEST_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"deadbeef + c n1-chunk0000").unwrap();
        drop(f);
        let m = Manifest::open(dir.path()).unwrap();
        assert_eq!(m.get(&cat, &a), None);
        assert_eq!(m.get(&cat, &b), Some(bound), "the last line wins");
        m.add(&cat, &a, e).unwrap();
        let again = Manifest::open(dir.path()).unwrap();
        assert_eq!(again.all().len(), 2);
    }
}
