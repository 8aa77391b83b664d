//! The category map and category creation: which categories exist, which
//! are being created, `max_categories` (checked before anything is written
//! for a new category), and creating one (directory and chunk counter
//! outside the map's lock, so creations of different categories overlap).
//! Never appends or recovers chunks.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use std::sync::Arc;

use super::{CategoryLog, Storage, StorageError};
use crate::fsutil;
use crate::names::Category;

/// The categories of a server, and those whose directory is being created.
#[derive(Debug, Default)]
pub(super) struct Categories {
    pub(super) logs: BTreeMap<Category, Arc<CategoryLog>>,
    /// Names being created (directory and counter outside the lock), with
    /// how many creators each: counted against `max_categories`.
    pub(super) creating: HashMap<Category, usize>,
}

impl Storage {
    /// The log of `category`, created (empty) if missing, whatever the
    /// number of categories: for copies of peers' chunks and the tier
    /// manifest, which hold data that exists already.
    ///
    /// # Errors
    /// Creating the category directory or reading its chunk counter failed.
    pub fn category_or_create(
        &self,
        category: &Category,
    ) -> Result<Arc<CategoryLog>, StorageError> {
        match self.category(category) {
            Some(log) => Ok(log),
            None => self.create_category(category, false),
        }
    }

    /// Creates `category` (empty) as its first write would, if
    /// `max_categories` allows: what Kafka's `CreateTopics` does. `false`
    /// when it existed already (nothing done).
    ///
    /// # Errors
    /// [`StorageError::TooManyCategories`], or creating its directory
    /// failed.
    pub fn create(&self, category: &Category) -> Result<bool, StorageError> {
        if self.category(category).is_some() {
            return Ok(false);
        }
        // Of two concurrent creations only the one that inserted the log
        // answers `true`.
        Ok(self.create_category_once(category, true)?.1)
    }

    /// Checks that a write may go to `category`: it exists, or one more
    /// category fits under `max_categories`. Lets a refused write be
    /// answered before its body is read; [`Storage::append`] checks again.
    ///
    /// # Errors
    /// [`StorageError::TooManyCategories`].
    pub fn admits(&self, category: &Category) -> Result<(), StorageError> {
        let c = self.categories.read();
        if c.logs.contains_key(category) || c.creating.contains_key(category) {
            return Ok(());
        }
        self.check_room(&c)
    }

    fn check_room(&self, c: &Categories) -> Result<(), StorageError> {
        let max = self.ctx.cfg.max_categories;
        if c.logs.len() + c.creating.len() >= max {
            return Err(StorageError::TooManyCategories { max });
        }
        Ok(())
    }

    /// Creates `category`: counted as being created under the lock (and,
    /// with `limited`, refused past `max_categories` before anything is
    /// written), its directory made durable and its counter read outside
    /// the lock, so creations of different categories overlap.
    pub(super) fn create_category(
        &self,
        category: &Category,
        limited: bool,
    ) -> Result<Arc<CategoryLog>, StorageError> {
        Ok(self.create_category_once(category, limited)?.0)
    }

    /// [`Storage::create_category`], also saying whether this call created
    /// the log (`false`: it existed, or a concurrent call created it).
    fn create_category_once(
        &self,
        category: &Category,
        limited: bool,
    ) -> Result<(Arc<CategoryLog>, bool), StorageError> {
        {
            let mut c = self.categories.write();
            if let Some(log) = c.logs.get(category) {
                return Ok((Arc::clone(log), false));
            }
            if limited && !c.creating.contains_key(category) {
                self.check_room(&c)?;
            }
            *c.creating.entry(category.clone()).or_insert(0) += 1;
        }
        let dir = self.ctx.data_dir.join(category.as_str());
        let made = fsutil::create_dir_durable(&dir)
            .map_err(|e| StorageError::io("create category dir", &dir, e))
            .and_then(|()| read_counter(&self.ctx.counter_path(category)));
        let mut c = self.categories.write();
        if let Some(n) = c.creating.get_mut(category) {
            *n -= 1;
            if *n == 0 {
                c.creating.remove(category);
            }
        }
        if let Some(log) = c.logs.get(category) {
            return Ok((Arc::clone(log), false));
        }
        let log = Arc::new(CategoryLog::new(
            category.clone(),
            dir,
            Arc::clone(&self.ctx),
            BTreeMap::new(),
            made?,
        ));
        c.logs.insert(category.clone(), Arc::clone(&log));
        drop(c);
        tracing::info!(%category, "created category");
        Ok((log, true))
    }
}

pub(super) fn read_counter(path: &Path) -> Result<u64, StorageError> {
    match fs::read_to_string(path) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| StorageError::Io {
            op: "parse chunk counter",
            path: path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(StorageError::io("read chunk counter", path, e)),
    }
}
