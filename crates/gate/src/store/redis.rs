//! [`Store`] in Redis: one state for a fleet of hb402 instances, so a payment used on one is
//! refused on every other.
//!
//! Every decision that reads and then writes (take a lock, mark a key spent, release a lock,
//! append to the ledger, move a payment on) runs as one Lua script, which Redis executes
//! atomically: of any number of instances racing for a replay lock exactly one wins.
//!
//! Time: expiry is decided by the store's [`Clock`], passed to the scripts as `now`, exactly as
//! in the redb store, so tests inject one. Redis's own key expiry is only garbage collection: a
//! lock lives in Redis for [`EXPIRY_GRACE_SECONDS`] beyond its end, which tolerates that much
//! clock skew between instances before a lapsed lock is collected.
//!
//! Layout under the key prefix (default `hb402:`):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `item:{bucket}/{id}` | string | JSON [`ItemMeta`]; an expiring copy expires in Redis [`ITEM_GRACE_SECONDS`] after hb402's janitor is due to forget it |
//! | `items:expiry` | sorted set | `{bucket}/{id}` of every expiring copy, scored by its expiry |
//! | `hold:{key}` | string | JSON [`LockRecord`], expiring with a grace |
//! | `ledger:next` | string | the last ledger id handed out (`INCR`) |
//! | `ledger:records` | hash | id → JSON entry (the [`PaymentRecord`] without its id) |
//! | `ledger:ids` | sorted set | every id, scored by itself, for paging |

use std::sync::LazyLock;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, Script};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{
    ChannelRecord, Clock, LockRecord, NewPayment, PaymentRecord, PaymentState, Purged, Store,
    StoreError, item_key, purgeable, system_clock,
};
use crate::meta::ItemMeta;

/// How long Redis keeps a lock, spent mark or receipt after the time it ends (by the writer's
/// clock) before collecting it.
pub const EXPIRY_GRACE_SECONDS: u64 = 60;

/// Entries ending further away than this (e.g. a lock taken until `u64::MAX`) get no Redis
/// expiry at all; [`Store::purge_expired`] still removes them once they lapse.
const MAX_EXPIRY_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// Keys per `SCAN` step and per purge script call.
const SCAN_BATCH: usize = 500;

/// Attempts of a ledger update racing other writers of the same entry.
const UPDATE_ATTEMPTS: usize = 16;

/// How long after its expiry an expiring item's metadata stays in Redis. The janitor forgets
/// expired copies long before (`expiry.tombstone_days`); this only bounds what a stopped janitor
/// leaves behind.
pub const ITEM_GRACE_SECONDS: u64 = 400 * 24 * 3600;

/// KEYS[1] lock key; ARGV now, expected JSON or "" (absent or lapsed), new JSON or "" (delete),
/// new until, expiry seconds or "". 1 if swapped.
static LOCK_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, r = pcall(cjson.decode, v)
  if not ok or type(r) ~= 'table' or type(r['until']) ~= 'number' or r['until'] <= tonumber(ARGV[1]) then
    v = false
  end
end
local current = v or ''
if current ~= ARGV[2] then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[1])
elseif ARGV[5] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
else
  redis.call('SET', KEYS[1], ARGV[3], 'EX', ARGV[5])
end
return 1
",
    )
});

/// KEYS[1] the set of unclaimed channels an earlier hb402 kept, KEYS[2] the sorted set that
/// replaced it: moves the ids over. The number moved.
static MIGRATE_UNCLAIMED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'set' then return 0 end
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[2], 0, id)
end
redis.call('DEL', KEYS[1])
return #ids
",
    )
});

/// KEYS[1] channel key, KEYS[2] the unclaimed channels (a sorted set, all scores 0: in id
/// order), KEYS[3] the refundable channels
/// by last activity; ARGV the expected version or "" (none), new JSON or "" (delete), "1" if the
/// new record has unclaimed charges, the channel id, its last activity if it is refundable or "".
/// 1 if swapped.
static CHANNEL_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = redis.call('GET', KEYS[1])
local version = ''
if v then
  local ok, r = pcall(cjson.decode, v)
  if not ok or type(r) ~= 'table' or type(r['version']) ~= 'number' then return 0 end
  version = string.format('%d', r['version'])
end
if version ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2])
end
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], 0, ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
if ARGV[5] ~= '' then
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
else
  redis.call('ZREM', KEYS[3], ARGV[4])
end
return 1
",
    )
});

/// KEYS[1] item key, KEYS[2] expiry index; ARGV metadata JSON, expiry seconds or "", expires
/// at or "", index member. 1 if stored (no record was there).
static PUT_META_NEW: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
if ARGV[3] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1
",
    )
});

/// KEYS lock keys; ARGV[1] now. Deletes lapsed and undecodable ones; returns how many.
static PURGE_LOCKS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local now = tonumber(ARGV[1])
local removed = 0
for _, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v then
    local ok, r = pcall(cjson.decode, v)
    if not ok or type(r) ~= 'table' or type(r['until']) ~= 'number' or r['until'] <= now then
      redis.call('DEL', key)
      removed = removed + 1
    end
  end
end
return removed
",
    )
});

/// KEYS ledger:next, ledger:records, ledger:ids; ARGV[1] the entry. Returns its new id.
static LEDGER_APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = redis.call('INCR', KEYS[1])
redis.call('HSET', KEYS[2], id, ARGV[1])
redis.call('ZADD', KEYS[3], id, id)
return id
",
    )
});

/// KEYS ledger:records; ARGV id, expected entry, new entry. 1 if swapped, 0 if it changed.
static LEDGER_SWAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
",
    )
});

/// A ledger entry as stored: [`PaymentRecord`] without the id, which is its hash field.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    created_at: u64,
    updated_at: u64,
    #[serde(flatten)]
    payment: NewPayment,
    #[serde(flatten)]
    state: PaymentState,
}

impl Entry {
    fn into_record(self, id: u64) -> PaymentRecord {
        PaymentRecord {
            id,
            created_at: self.created_at,
            updated_at: self.updated_at,
            payment: self.payment,
            state: self.state,
        }
    }
}

/// Options of [`RedisStore::connect_with`].
#[derive(Clone)]
pub struct RedisOptions {
    /// Prepended to every key, so deployments can share a Redis. Default `hb402:`. Instances
    /// that must share locks must use the same prefix.
    pub key_prefix: String,
    /// Where "now" comes from. Default: the system clock.
    pub clock: Clock,
    /// Bound on establishing a connection (also each reconnection attempt). Default 2 s.
    pub connect_timeout: Duration,
    /// Bound on each command's answer; a late answer is an error. Default 2 s.
    pub response_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            key_prefix: "hb402:".to_owned(),
            clock: system_clock(),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
        }
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOptions")
            .field("key_prefix", &self.key_prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

/// The Redis-backed store. Cloning shares the connection, which reconnects by itself after a
/// failure; commands that fail meanwhile return [`StoreError::Backend`].
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// The URL with any password masked, for messages.
    url: String,
    prefix: String,
    clock: Clock,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn backend(e: RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {e}"))
}

/// `url` with the password (or the whole user info) replaced by `***`.
fn mask_credentials(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let authority_end = url[scheme_end..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| scheme_end + i);
    match url[scheme_end..authority_end].rfind('@') {
        Some(at) => format!("{}***{}", &url[..scheme_end], &url[scheme_end + at..]),
        None => url.to_owned(),
    }
}

/// Redis expiry (seconds from now) for an entry ending at `until`: its remaining time plus the
/// grace, or `None` (keep) when that is absurdly far away.
fn expiry(until: u64, now: u64) -> String {
    let seconds = until
        .saturating_sub(now)
        .saturating_add(EXPIRY_GRACE_SECONDS);
    if seconds > MAX_EXPIRY_SECONDS {
        String::new()
    } else {
        seconds.to_string()
    }
}

/// `text` with the glob characters of `SCAN MATCH` escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStore {
    /// Connects to the Redis at `url` (`redis://[user:password@]host:port[/db]`, `rediss://…`
    /// with TLS not compiled in, `unix:///path`) with the default options.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, RedisOptions::default()).await
    }

    /// Like [`RedisStore::connect`], reading "now" from `clock` (tests inject one; a fleet should
    /// use the system clock, kept in sync).
    pub async fn connect_with_clock(url: &str, clock: Clock) -> Result<Self, StoreError> {
        Self::connect_with(
            url,
            RedisOptions {
                clock,
                ..RedisOptions::default()
            },
        )
        .await
    }

    /// Connects with `options`, checking that the server answers.
    pub async fn connect_with(url: &str, options: RedisOptions) -> Result<Self, StoreError> {
        let masked = mask_credentials(url);
        let open_err = |e: RedisError| StoreError::Open {
            path: masked.clone(),
            reason: e.to_string(),
        };
        let client = Client::open(url).map_err(open_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            .set_response_timeout(Some(options.response_timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(open_err)?;
        let store = RedisStore {
            conn,
            url: masked.clone(),
            prefix: options.key_prefix,
            clock: options.clock,
        };
        store.ping().await.map_err(|e| StoreError::Open {
            path: masked.clone(),
            reason: e.to_string(),
        })?;
        // Unclaimed charges listed the way an earlier hb402 did are claimed all the same.
        let moved: i64 = MIGRATE_UNCLAIMED
            .key(store.key("channels", "unclaimed"))
            .key(store.key("channels", "unclaimed-by-id"))
            .invoke_async(&mut store.conn.clone())
            .await
            .map_err(|e| StoreError::Open {
                path: masked,
                reason: e.to_string(),
            })?;
        if moved > 0 {
            tracing::info!(
                channels = moved,
                "unclaimed channels moved to the new listing"
            );
        }
        Ok(store)
    }

    /// The URL connected to, with any password masked.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The records of channels `ids` (those still there), with their ids.
    async fn channel_records(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(record) = self.channel_get(&id).await? {
                out.push((id, record));
            }
        }
        Ok(out)
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}{kind}:{name}", self.prefix)
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    async fn query<T: ::redis::FromRedisValue>(
        &self,
        cmd: &mut ::redis::Cmd,
    ) -> Result<T, StoreError> {
        cmd.query_async(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    /// Calls `purge` on every key matching `{prefix}{kind}:*`; returns the sum of its answers.
    async fn purge_kind(&self, kind: &str, purge: &Script, now: u64) -> Result<u64, StoreError> {
        let pattern = format!("{}{kind}:*", glob_escape(&self.prefix));
        let mut removed = 0;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .query(
                    ::redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH),
                )
                .await?;
            if !keys.is_empty() {
                let count: u64 = purge
                    .key(keys)
                    .arg(now)
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(backend)?;
                removed += count;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }
}

/// The canonical JSON of a lock record: what the swap script compares byte for byte.
fn lock_json(record: Option<&LockRecord>) -> Result<String, StoreError> {
    Ok(match record {
        Some(r) => serde_json::to_string(r)?,
        None => String::new(),
    })
}

impl RedisStore {
    /// Moves ledger entries that ended without a settlement before `before` out, in batches.
    async fn purge_ledger(&self, before: u64) -> Result<u64, StoreError> {
        let records = self.key("ledger", "records");
        let ids_key = self.key("ledger", "ids");
        let mut removed = 0;
        let mut since = 0u64;
        loop {
            let page = self.ledger_list(since, SCAN_BATCH).await?;
            let Some(last) = page.last() else {
                return Ok(removed);
            };
            since = last.id;
            let stale: Vec<u64> = page
                .iter()
                .filter(|r| purgeable(&r.state, r.updated_at, before))
                .map(|r| r.id)
                .collect();
            if !stale.is_empty() {
                // Index first, in one transaction: a reader never sees an id without its entry.
                let mut pipe = ::redis::pipe();
                pipe.atomic()
                    .cmd("ZREM")
                    .arg(&ids_key)
                    .arg(&stale)
                    .ignore()
                    .cmd("HDEL")
                    .arg(&records)
                    .arg(&stale)
                    .ignore();
                pipe.query_async::<()>(&mut self.conn.clone())
                    .await
                    .map_err(backend)?;
                removed += stale.len() as u64;
            }
        }
    }
}

#[async_trait]
impl Store for RedisStore {
    async fn get_meta(&self, bucket: &str, id: &str) -> Result<Option<ItemMeta>, StoreError> {
        let json: Option<Vec<u8>> = self
            .query(::redis::cmd("GET").arg(self.key("item", &item_key(bucket, id))))
            .await?;
        json.map(|j| serde_json::from_slice(&j))
            .transpose()
            .map_err(StoreError::from)
    }

    async fn put_meta(&self, meta: &ItemMeta) -> Result<(), StoreError> {
        let json = serde_json::to_vec(meta)?;
        let name = item_key(&meta.bucket, &meta.id);
        let mut set = ::redis::cmd("SET");
        set.arg(self.key("item", &name)).arg(json);
        if let Some(at) = meta.expires_at {
            let ttl = expiry(at.saturating_add(ITEM_GRACE_SECONDS), self.now());
            if !ttl.is_empty() {
                set.arg("EX").arg(ttl);
            }
        }
        let mut pipe = ::redis::pipe();
        pipe.atomic().add_command(set).ignore();
        match meta.expires_at {
            Some(at) => pipe
                .cmd("ZADD")
                .arg(self.key("items", "expiry"))
                .arg(at)
                .arg(&name)
                .ignore(),
            None => pipe
                .cmd("ZREM")
                .arg(self.key("items", "expiry"))
                .arg(&name)
                .ignore(),
        };
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn put_meta_new(&self, meta: &ItemMeta) -> Result<bool, StoreError> {
        let json = serde_json::to_vec(meta)?;
        let name = item_key(&meta.bucket, &meta.id);
        let ttl = meta.expires_at.map_or(String::new(), |at| {
            expiry(at.saturating_add(ITEM_GRACE_SECONDS), self.now())
        });
        let stored: i64 = PUT_META_NEW
            .key(self.key("item", &name))
            .key(self.key("items", "expiry"))
            .arg(json)
            .arg(ttl)
            .arg(meta.expires_at.map_or(String::new(), |at| at.to_string()))
            .arg(&name)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(stored == 1)
    }

    async fn delete_meta(&self, bucket: &str, id: &str) -> Result<(), StoreError> {
        let name = item_key(bucket, id);
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.key("item", &name))
            .ignore()
            .cmd("ZREM")
            .arg(self.key("items", "expiry"))
            .arg(&name)
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn expired_items(&self, before: u64, limit: usize) -> Result<Vec<ItemMeta>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let names: Vec<String> = self
            .query(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(self.key("items", "expiry"))
                    .arg("-inf")
                    .arg(before)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let json: Option<Vec<u8>> = self
                .query(::redis::cmd("GET").arg(self.key("item", &name)))
                .await?;
            match json {
                Some(json) => out.push(serde_json::from_slice(&json)?),
                // Collected by Redis already: only the index entry is left.
                None => {
                    let _: i64 = self
                        .query(
                            ::redis::cmd("ZREM")
                                .arg(self.key("items", "expiry"))
                                .arg(&name),
                        )
                        .await?;
                }
            }
        }
        Ok(out)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let pong: String = self.query(&mut ::redis::cmd("PING")).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(StoreError::Backend(format!(
                "redis answered PING with {pong:?}"
            )))
        }
    }

    async fn lock_get(&self, key: &str) -> Result<Option<LockRecord>, StoreError> {
        let json: Option<Vec<u8>> = self
            .query(::redis::cmd("GET").arg(self.key("hold", key)))
            .await?;
        let now = self.now();
        Ok(json
            .and_then(|j| serde_json::from_slice::<LockRecord>(&j).ok())
            .filter(|r| r.until > now))
    }

    async fn lock_swap(
        &self,
        key: &str,
        expected: Option<&LockRecord>,
        new: Option<&LockRecord>,
    ) -> Result<bool, StoreError> {
        let now = self.now();
        let swapped: i64 = LOCK_SWAP
            .key(self.key("hold", key))
            .arg(now)
            .arg(lock_json(expected)?)
            .arg(lock_json(new)?)
            .arg(new.map_or(0, |r| r.until))
            .arg(new.map_or_else(String::new, |r| expiry(r.until, now)))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(swapped == 1)
    }

    async fn channel_get(&self, id: &str) -> Result<Option<ChannelRecord>, StoreError> {
        let json: Option<Vec<u8>> = self
            .query(::redis::cmd("GET").arg(self.key("channel", id)))
            .await?;
        json.map(|j| serde_json::from_slice(&j))
            .transpose()
            .map_err(Into::into)
    }

    async fn channel_swap(
        &self,
        id: &str,
        expected: Option<&ChannelRecord>,
        new: Option<&ChannelRecord>,
    ) -> Result<bool, StoreError> {
        let unclaimed = new.is_some_and(ChannelRecord::unclaimed);
        let since = new.and_then(ChannelRecord::refundable_since);
        let new = new.map(serde_json::to_string).transpose()?;
        let swapped: i64 = CHANNEL_SWAP
            .key(self.key("channel", id))
            .key(self.key("channels", "unclaimed-by-id"))
            .key(self.key("channels", "refundable"))
            .arg(expected.map_or_else(String::new, |r| r.version.to_string()))
            .arg(new.unwrap_or_default())
            .arg(if unclaimed { "1" } else { "0" })
            .arg(id)
            .arg(since.map_or_else(String::new, |s| s.to_string()))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)?;
        Ok(swapped == 1)
    }

    async fn channels_idle(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError> {
        let ids: Vec<String> = self
            .query(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(self.key("channels", "refundable"))
                    .arg("-inf")
                    .arg(format!("({before}"))
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        self.channel_records(ids).await
    }

    async fn channels_unclaimed(
        &self,
        after: &str,
        limit: usize,
    ) -> Result<Vec<(String, ChannelRecord)>, StoreError> {
        let from = if after.is_empty() {
            "-".to_owned()
        } else {
            format!("({after}")
        };
        let ids: Vec<String> = self
            .query(
                ::redis::cmd("ZRANGEBYLEX")
                    .arg(self.key("channels", "unclaimed-by-id"))
                    .arg(from)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?;
        self.channel_records(ids).await
    }

    async fn ledger_append(&self, payment: &NewPayment) -> Result<u64, StoreError> {
        let now = self.now();
        let entry = Entry {
            created_at: now,
            updated_at: now,
            payment: payment.clone(),
            state: PaymentState::Verified,
        };
        let json = serde_json::to_string(&entry)?;
        // One script: ids become visible in the order they are handed out, so paging with the
        // last id seen never skips an entry.
        LEDGER_APPEND
            .key(self.key("ledger", "next"))
            .key(self.key("ledger", "records"))
            .key(self.key("ledger", "ids"))
            .arg(json)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(backend)
    }

    async fn ledger_update(&self, id: u64, state: PaymentState) -> Result<(), StoreError> {
        let records = self.key("ledger", "records");
        for _ in 0..UPDATE_ATTEMPTS {
            let current: Option<String> = self
                .query(::redis::cmd("HGET").arg(&records).arg(id))
                .await?;
            let Some(current) = current else {
                return Err(StoreError::UnknownPayment(id));
            };
            let mut entry: Entry = serde_json::from_str(&current)?;
            if !entry.state.may_become(&state) {
                return Err(StoreError::InvalidTransition {
                    id,
                    from: entry.state.name(),
                    to: state.name(),
                });
            }
            entry.state = state.clone();
            entry.updated_at = self.now();
            let next = serde_json::to_string(&entry)?;
            // Compare-and-swap: another instance may have moved the entry since the read.
            let swapped: i64 = LEDGER_SWAP
                .key(&records)
                .arg(id)
                .arg(&current)
                .arg(next)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(backend)?;
            if swapped == 1 {
                return Ok(());
            }
        }
        Err(StoreError::Backend(format!(
            "payment {id}: still contended after {UPDATE_ATTEMPTS} attempts"
        )))
    }

    async fn ledger_list(
        &self,
        since: u64,
        limit: usize,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let ids: Vec<u64> = self
            .query(
                ::redis::cmd("ZRANGEBYSCORE")
                    .arg(self.key("ledger", "ids"))
                    .arg(format!("({since}"))
                    .arg("+inf")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit.min(i64::MAX as usize)),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let entries: Vec<Option<String>> = self
            .query(
                ::redis::cmd("HMGET")
                    .arg(self.key("ledger", "records"))
                    .arg(&ids),
            )
            .await?;
        ids.into_iter()
            .zip(entries)
            .map(|(id, json)| {
                let json = json.ok_or_else(|| {
                    StoreError::Backend(format!("ledger id {id} is indexed but has no entry"))
                })?;
                let entry: Entry = serde_json::from_str(&json)?;
                Ok(entry.into_record(id))
            })
            .collect()
    }

    async fn purge(&self, ledger_before: u64) -> Result<Purged, StoreError> {
        let now = self.now();
        let locks = self.purge_kind("hold", &PURGE_LOCKS, now).await?;
        let ledger = self.purge_ledger(ledger_before).await?;
        Ok(Purged { locks, ledger })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(
            mask_credentials("redis://:s3cret@10.0.0.1:6379/2"),
            "redis://***@10.0.0.1:6379/2"
        );
        assert_eq!(
            mask_credentials("rediss://user:p@ss@host"),
            "rediss://***@host"
        );
        assert_eq!(
            mask_credentials("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(
            mask_credentials("redis://h:1/0?x=a@b"),
            "redis://h:1/0?x=a@b"
        );
        assert_eq!(
            mask_credentials("unix:///run/redis.sock"),
            "unix:///run/redis.sock"
        );
    }

    #[test]
    fn expiry_adds_the_grace_and_drops_absurd_ones() {
        assert_eq!(
            expiry(1_010, 1_000),
            (10 + EXPIRY_GRACE_SECONDS).to_string()
        );
        assert_eq!(expiry(900, 1_000), EXPIRY_GRACE_SECONDS.to_string());
        assert_eq!(expiry(u64::MAX, 1_000), "");
    }

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
        assert_eq!(glob_escape("hb402:"), "hb402:");
    }

    #[test]
    fn entries_round_trip_without_their_id() {
        let entry = Entry {
            created_at: 1,
            updated_at: 2,
            payment: NewPayment {
                resource: "r".into(),
                network: "base".into(),
                asset: "0xa".into(),
                payer: "0xb".into(),
                pay_to: "0xc".into(),
                amount: "10000".into(),
                lock_key: "k".into(),
                kind: Default::default(),
            },
            state: PaymentState::Failed { reason: "x".into() },
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert!(json.get("id").is_none());
        assert_eq!(json["state"], "failed");
        let record = serde_json::from_value::<Entry>(json)
            .unwrap()
            .into_record(7);
        assert_eq!(record.id, 7);
        assert_eq!(record.state, PaymentState::Failed { reason: "x".into() });
    }
}
