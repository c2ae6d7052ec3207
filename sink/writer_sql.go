package sink

// Staging tables live per connection (temporary, emptied at every commit).
// Their rows are the batch as COPYed; the merge statements below read them.
const stagingDDL = `
CREATE TEMP TABLE IF NOT EXISTS wp_stage_messages (hash bytea, fid int8, type int2, ts timestamptz, hash_scheme int2, signature_scheme int2, signer bytea, raw bytea) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_marks (hash bytea, kind int2) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_casts (hash bytea, fid int8, ts timestamptz, parent_fid int8, parent_hash bytea, parent_url text, text text, embeds text, mentions text, mentions_positions text, type int2, embedding vector) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_cast_removes (hash bytea, fid int8, ts timestamptz, target_hash bytea) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_reactions (hash bytea, fid int8, ts timestamptz, is_remove bool, type int2, target_cast_fid int8, target_cast_hash bytea, target_url text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_links (hash bytea, fid int8, ts timestamptz, is_remove bool, type text, target_fid int8, display_timestamp timestamptz) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_compacts (hash bytea, fid int8, ts timestamptz, type text, target_fids int8[]) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_verifications (hash bytea, fid int8, ts timestamptz, is_remove bool, signer_address bytea, block_hash bytea, signature bytea, protocol int2, verification_type int2, chain_id int8) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_user_data (hash bytea, fid int8, ts timestamptz, type int2, value text) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_proofs (username text, fid int8, ts timestamptz, type int2, owner bytea, signature bytea, is_deletion bool) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_lends (hash bytea, fid int8, ts timestamptz, to_fid int8, num_units int8, unit_type int2) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS wp_stage_onchain (type int2, chain_id int8, block_number int8, block_hash bytea, block_timestamp timestamptz, tx_hash bytea, log_index int4, tx_index int4, fid int8, version int4, raw bytea,
  key bytea, key_type int2, event_type int2, metadata bytea, metadata_type int2, migrated_at int8, to_address bytea, from_address bytea, recovery_address bytea, payer bytea, units int8, expiry int8, tier_type int2, for_days int8) ON COMMIT DELETE ROWS;
`

var (
	colsMessages      = []string{"hash", "fid", "type", "ts", "hash_scheme", "signature_scheme", "signer", "raw"}
	colsMarks         = []string{"hash", "kind"}
	colsCasts         = []string{"hash", "fid", "ts", "parent_fid", "parent_hash", "parent_url", "text", "embeds", "mentions", "mentions_positions", "type", "embedding"}
	colsCastRemoves   = []string{"hash", "fid", "ts", "target_hash"}
	colsReactions     = []string{"hash", "fid", "ts", "is_remove", "type", "target_cast_fid", "target_cast_hash", "target_url"}
	colsLinks         = []string{"hash", "fid", "ts", "is_remove", "type", "target_fid", "display_timestamp"}
	colsCompacts      = []string{"hash", "fid", "ts", "type", "target_fids"}
	colsVerifications = []string{"hash", "fid", "ts", "is_remove", "signer_address", "block_hash", "signature", "protocol", "verification_type", "chain_id"}
	colsUserData      = []string{"hash", "fid", "ts", "type", "value"}
	colsProofs        = []string{"username", "fid", "ts", "type", "owner", "signature", "is_deletion"}
	colsLends         = []string{"hash", "fid", "ts", "to_fid", "num_units", "unit_type"}
	colsOnchain       = []string{"type", "chain_id", "block_number", "block_hash", "block_timestamp", "tx_hash", "log_index", "tx_index", "fid", "version", "raw",
		"key", "key_type", "event_type", "metadata", "metadata_type", "migrated_at", "to_address", "from_address", "recovery_address", "payer", "units", "expiry", "tier_type", "for_days"}
	colsDeadLetters = []string{"source", "reason", "detail", "shard", "event_id", "message_hash", "raw"}
)

// Marks first: every later statement reads message_marks, so a message and
// its prune in the same batch behave as in separate ones.
const sqlMarks = `
INSERT INTO message_marks AS mm (hash, pruned_at, revoked_at, deleted_at)
SELECT hash,
       CASE WHEN bool_or(kind = 1) THEN now() END,
       CASE WHEN bool_or(kind = 2) THEN now() END,
       now()
FROM wp_stage_marks GROUP BY hash
ON CONFLICT (hash) DO UPDATE SET
    pruned_at  = coalesce(mm.pruned_at, excluded.pruned_at),
    revoked_at = coalesce(mm.revoked_at, excluded.revoked_at)
WHERE (mm.pruned_at IS NULL AND excluded.pruned_at IS NOT NULL)
   OR (mm.revoked_at IS NULL AND excluded.revoked_at IS NOT NULL)`

const sqlMessages = `
INSERT INTO messages (hash, fid, type, "timestamp", hash_scheme, signature_scheme, signer, raw, deleted_at, pruned_at, revoked_at)
SELECT DISTINCT ON (s.hash) s.hash, s.fid, s.type, s.ts, s.hash_scheme, s.signature_scheme, s.signer, s.raw,
       mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM wp_stage_messages s LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (hash) DO NOTHING`

// A cast add fills a tombstone left by an earlier remove (text IS NULL) and
// keeps its deletion; an add removed in the same batch is stored deleted.
const sqlCasts = `
INSERT INTO casts AS c (hash, fid, "timestamp", parent_fid, parent_hash, parent_url, text, embeds, mentions, mentions_positions, type,
                        root_parent_url, embedding, deleted_at, pruned_at, revoked_at)
SELECT DISTINCT ON (s.hash) s.hash, s.fid, s.ts, s.parent_fid, s.parent_hash, s.parent_url, s.text, s.embeds::jsonb, s.mentions::jsonb,
       s.mentions_positions::jsonb, s.type, CASE WHEN s.parent_hash IS NULL THEN s.parent_url END, s.embedding,
       coalesce(mm.deleted_at, r.ts), mm.pruned_at, mm.revoked_at
FROM wp_stage_casts s
LEFT JOIN message_marks mm ON mm.hash = s.hash
LEFT JOIN (SELECT target_hash, fid, min(ts) AS ts FROM wp_stage_cast_removes GROUP BY 1, 2) r ON r.target_hash = s.hash AND r.fid = s.fid
ON CONFLICT (hash) DO UPDATE SET
    "timestamp" = excluded."timestamp", parent_fid = excluded.parent_fid, parent_hash = excluded.parent_hash,
    parent_url = excluded.parent_url, text = excluded.text, embeds = excluded.embeds, mentions = excluded.mentions,
    mentions_positions = excluded.mentions_positions, type = excluded.type, root_parent_url = excluded.root_parent_url,
    pruned_at = coalesce(c.pruned_at, excluded.pruned_at), revoked_at = coalesce(c.revoked_at, excluded.revoked_at)
WHERE c.text IS NULL AND c.fid = excluded.fid`

// A remove deletes its target, or leaves a tombstone for an add still to come.
const sqlCastRemoves = `
INSERT INTO casts AS c (hash, fid, "timestamp", deleted_at)
SELECT DISTINCT ON (target_hash) target_hash, fid, ts, ts
FROM wp_stage_cast_removes ORDER BY target_hash, ts
ON CONFLICT (hash) DO UPDATE SET deleted_at = excluded.deleted_at
WHERE c.deleted_at IS NULL AND c.fid = excluded.fid`

// Thread roots: start at the batch's casts and their parents whose thread
// root is known, and walk down to every descendant still lacking one. This
// completes chains whatever order their casts arrive in.
const sqlRoots = `
WITH RECURSIVE seed AS (
    SELECT p.hash,
           CASE WHEN p.parent_hash IS NULL THEN p.fid        ELSE p.root_parent_fid  END AS rfid,
           CASE WHEN p.parent_hash IS NULL THEN p.hash       ELSE p.root_parent_hash END AS rhash,
           CASE WHEN p.parent_hash IS NULL THEN p.parent_url ELSE p.root_parent_url  END AS rurl
    FROM casts p
    WHERE p.hash IN (SELECT hash FROM wp_stage_casts UNION SELECT parent_hash FROM wp_stage_casts WHERE parent_hash IS NOT NULL)
      AND p.text IS NOT NULL
      AND (p.parent_hash IS NULL OR p.root_parent_hash IS NOT NULL)
), walk AS (
    SELECT hash, rfid, rhash, rurl, 0 AS depth FROM seed
    UNION ALL
    SELECT c.hash, w.rfid, w.rhash, w.rurl, w.depth + 1
    FROM walk w JOIN casts c ON c.parent_hash = w.hash
    WHERE c.root_parent_hash IS NULL AND w.depth < 10000
)
UPDATE casts c SET root_parent_fid = w.rfid, root_parent_hash = w.rhash, root_parent_url = w.rurl
FROM walk w
WHERE c.hash = w.hash AND w.depth > 0 AND c.root_parent_hash IS NULL`

// Last write wins per key by (timestamp, remove beats add, hash): the batch's
// winner per key replaces the stored row only if it orders after it.
const sqlReactions = `
INSERT INTO reactions AS t (hash, fid, type, target_cast_fid, target_cast_hash, target_url, "timestamp", is_remove, deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.type, s.target_cast_fid, s.target_cast_hash, s.target_url, s.ts, s.is_remove,
       CASE WHEN s.is_remove THEN s.ts ELSE mm.deleted_at END, mm.pruned_at, mm.revoked_at
FROM (SELECT DISTINCT ON (fid, type, target_cast_hash, target_url) *
      FROM wp_stage_reactions
      ORDER BY fid, type, target_cast_hash, target_url, ts DESC, is_remove DESC, hash DESC) s
LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (fid, type, target_cast_hash, target_url) DO UPDATE SET
    hash = excluded.hash, target_cast_fid = excluded.target_cast_fid, "timestamp" = excluded."timestamp",
    is_remove = excluded.is_remove, deleted_at = excluded.deleted_at, pruned_at = excluded.pruned_at, revoked_at = excluded.revoked_at
WHERE (excluded."timestamp", excluded.is_remove, excluded.hash) > (t."timestamp", t.is_remove, t.hash)`

const sqlCompacts = `
INSERT INTO link_compact_states (hash, fid, type, target_fids, "timestamp", deleted_at, pruned_at, revoked_at)
SELECT DISTINCT ON (s.hash) s.hash, s.fid, s.type, s.target_fids, s.ts, mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM wp_stage_compacts s LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (hash) DO NOTHING`

// A link add is also dead when a newer compact state of its (fid, type)
// does not list its target.
const sqlLinks = `
INSERT INTO links AS t (hash, fid, target_fid, type, display_timestamp, "timestamp", is_remove, deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.target_fid, s.type, s.display_timestamp, s.ts, s.is_remove,
       CASE WHEN s.is_remove THEN s.ts
            WHEN mm.deleted_at IS NOT NULL THEN mm.deleted_at
            ELSE (SELECT min(k."timestamp") FROM link_compact_states k
                  WHERE k.fid = s.fid AND k.type = s.type AND k."timestamp" > s.ts AND NOT (s.target_fid = ANY (k.target_fids)))
       END,
       mm.pruned_at, mm.revoked_at
FROM (SELECT DISTINCT ON (fid, target_fid, type) *
      FROM wp_stage_links
      ORDER BY fid, target_fid, type, ts DESC, is_remove DESC, hash DESC) s
LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (fid, target_fid, type) DO UPDATE SET
    hash = excluded.hash, display_timestamp = excluded.display_timestamp, "timestamp" = excluded."timestamp",
    is_remove = excluded.is_remove, deleted_at = excluded.deleted_at, pruned_at = excluded.pruned_at, revoked_at = excluded.revoked_at
WHERE (excluded."timestamp", excluded.is_remove, excluded.hash) > (t."timestamp", t.is_remove, t.hash)`

// A compact state deletes the older links of its (fid, type) it does not
// list, and supersedes older compact states.
const sqlCompactApply = `
UPDATE links l SET deleted_at = k.ts
FROM (SELECT DISTINCT fid, type, ts, target_fids FROM wp_stage_compacts) k
WHERE l.fid = k.fid AND l.type = k.type AND l."timestamp" < k.ts
  AND NOT (l.target_fid = ANY (k.target_fids)) AND l.deleted_at IS NULL`

const sqlCompactSupersede = `
UPDATE link_compact_states t SET deleted_at = n."timestamp"
FROM link_compact_states n
WHERE (t.fid, t.type) IN (SELECT fid, type FROM wp_stage_compacts)
  AND n.fid = t.fid AND n.type = t.type AND (n."timestamp", n.hash) > (t."timestamp", t.hash)
  AND t.deleted_at IS NULL`

const sqlVerifications = `
INSERT INTO verifications AS t (hash, fid, signer_address, block_hash, signature, protocol, verification_type, chain_id, "timestamp", is_remove, deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.signer_address, s.block_hash, s.signature, s.protocol, s.verification_type, s.chain_id, s.ts, s.is_remove,
       CASE WHEN s.is_remove THEN s.ts ELSE mm.deleted_at END, mm.pruned_at, mm.revoked_at
FROM (SELECT DISTINCT ON (fid, signer_address) *
      FROM wp_stage_verifications
      ORDER BY fid, signer_address, ts DESC, is_remove DESC, hash DESC) s
LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (fid, signer_address) DO UPDATE SET
    hash = excluded.hash, block_hash = excluded.block_hash, signature = excluded.signature, protocol = excluded.protocol,
    verification_type = excluded.verification_type, chain_id = excluded.chain_id, "timestamp" = excluded."timestamp",
    is_remove = excluded.is_remove, deleted_at = excluded.deleted_at, pruned_at = excluded.pruned_at, revoked_at = excluded.revoked_at
WHERE (excluded."timestamp", excluded.is_remove, excluded.hash) > (t."timestamp", t.is_remove, t.hash)`

const sqlUserData = `
INSERT INTO user_data AS t (hash, fid, type, value, "timestamp", deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.type, s.value, s.ts, mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM (SELECT DISTINCT ON (fid, type) * FROM wp_stage_user_data ORDER BY fid, type, ts DESC, hash DESC) s
LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (fid, type) DO UPDATE SET
    hash = excluded.hash, value = excluded.value, "timestamp" = excluded."timestamp",
    deleted_at = excluded.deleted_at, pruned_at = excluded.pruned_at, revoked_at = excluded.revoked_at
WHERE (excluded."timestamp", excluded.hash) > (t."timestamp", t.hash)`

// Fname proofs: the highest timestamp wins; on a tie a deletion wins, then
// the higher fid and signature, so any order converges.
const sqlProofs = `
INSERT INTO username_proofs AS t (username, fid, type, owner, signature, "timestamp", is_deletion, deleted_at)
SELECT s.username, s.fid, s.type, s.owner, s.signature, s.ts, s.is_deletion, CASE WHEN s.is_deletion THEN s.ts END
FROM (SELECT DISTINCT ON (username) * FROM wp_stage_proofs ORDER BY username, ts DESC, is_deletion DESC, fid DESC, signature DESC) s
ON CONFLICT (username) DO UPDATE SET
    fid = excluded.fid, type = excluded.type, owner = excluded.owner, signature = excluded.signature,
    "timestamp" = excluded."timestamp", is_deletion = excluded.is_deletion, deleted_at = excluded.deleted_at
WHERE (excluded."timestamp", excluded.is_deletion, excluded.fid, excluded.signature) > (t."timestamp", t.is_deletion, t.fid, t.signature)`

const sqlLends = `
INSERT INTO lend_storage (hash, fid, to_fid, num_units, unit_type, "timestamp", deleted_at, pruned_at, revoked_at)
SELECT DISTINCT ON (s.hash) s.hash, s.fid, s.to_fid, s.num_units, s.unit_type, s.ts, mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM wp_stage_lends s LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (hash) DO NOTHING`

// sqlApplyMarks marks rows already stored (before this batch, or inserted
// by it under another key) whose message this batch prunes, revokes or
// reports deleted. %s is the table.
const sqlApplyMarks = `
UPDATE %s t SET deleted_at = coalesce(t.deleted_at, mm.deleted_at),
                pruned_at  = coalesce(t.pruned_at, mm.pruned_at),
                revoked_at = coalesce(t.revoked_at, mm.revoked_at)
FROM message_marks mm
WHERE mm.hash IN (SELECT hash FROM wp_stage_marks) AND t.hash = mm.hash
  AND (t.deleted_at IS NULL OR (t.pruned_at IS NULL AND mm.pruned_at IS NOT NULL) OR (t.revoked_at IS NULL AND mm.revoked_at IS NOT NULL))`

var markedTables = []string{"messages", "casts", "reactions", "links", "link_compact_states", "verifications", "user_data", "lend_storage"}

const sqlOnchain = `
INSERT INTO onchain_events (tx_hash, log_index, type, fid, chain_id, block_number, block_hash, block_timestamp, tx_index, version, raw)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, type, fid, chain_id, block_number, block_hash, block_timestamp, tx_index, version, raw
FROM wp_stage_onchain
ON CONFLICT (tx_hash, log_index) DO NOTHING`

var sqlOnchainTyped = []struct{ table, sql string }{
	{"signer_events", `
INSERT INTO signer_events (tx_hash, log_index, fid, key, key_type, event_type, metadata, metadata_type, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, key, key_type, event_type, metadata, metadata_type, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM wp_stage_onchain WHERE type = 1
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"signer_migrated_events", `
INSERT INTO signer_migrated_events (tx_hash, log_index, fid, migrated_at, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, migrated_at, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM wp_stage_onchain WHERE type = 2
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"id_register_events", `
INSERT INTO id_register_events (tx_hash, log_index, fid, to_address, event_type, from_address, recovery_address, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, to_address, event_type, from_address, recovery_address, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM wp_stage_onchain WHERE type = 3
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"storage_rent_events", `
INSERT INTO storage_rent_events (tx_hash, log_index, fid, payer, units, expiry, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, payer, units, expiry, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM wp_stage_onchain WHERE type = 4
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"tier_purchases", `
INSERT INTO tier_purchases (tx_hash, log_index, fid, tier_type, for_days, payer, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, tier_type, for_days, payer, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM wp_stage_onchain WHERE type = 5
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
}

// The fids touched by the batch are recomputed from everything stored, so
// the result does not depend on the order their events arrived in. Storage
// counts rent events whose expiry (Unix seconds, 0 = none) is in the future.
const sqlFids = `
INSERT INTO fids AS f (fid, registered_at, custody_address, recovery_address, storage_units, tier, tier_expires_at, updated_at)
SELECT t.fid,
       (SELECT min(e.block_timestamp) FROM id_register_events e WHERE e.fid = t.fid AND e.event_type = 1),
       (SELECT e.to_address FROM id_register_events e WHERE e.fid = t.fid AND e.event_type IN (1, 2)
        ORDER BY e.block_number DESC, e.log_index DESC LIMIT 1),
       (SELECT e.recovery_address FROM id_register_events e WHERE e.fid = t.fid AND e.event_type IN (1, 3)
        ORDER BY e.block_number DESC, e.log_index DESC LIMIT 1),
       coalesce((SELECT sum(e.units) FROM storage_rent_events e WHERE e.fid = t.fid
                 AND (e.expiry = 0 OR e.expiry > extract(epoch FROM now()))), 0),
       coalesce((SELECT e.tier_type FROM tier_purchases e WHERE e.fid = t.fid
                 ORDER BY e.block_number DESC, e.log_index DESC LIMIT 1), 0),
       (SELECT max(e.block_timestamp + make_interval(days => e.for_days::int)) FROM tier_purchases e WHERE e.fid = t.fid),
       now()
FROM (SELECT DISTINCT fid FROM wp_stage_onchain) t
ON CONFLICT (fid) DO UPDATE SET
    registered_at = excluded.registered_at, custody_address = excluded.custody_address,
    recovery_address = excluded.recovery_address, storage_units = excluded.storage_units,
    tier = excluded.tier, tier_expires_at = excluded.tier_expires_at, updated_at = excluded.updated_at
WHERE (f.registered_at, f.custody_address, f.recovery_address, f.storage_units, f.tier, f.tier_expires_at)
      IS DISTINCT FROM (excluded.registered_at, excluded.custody_address, excluded.recovery_address, excluded.storage_units, excluded.tier, excluded.tier_expires_at)`
