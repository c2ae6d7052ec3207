-- The Farcaster state Waypoint keeps. Table and column names follow the
-- published Rust Waypoint schema so that queries written for it keep working;
-- constraints differ where its own were wrong for a convergent writer.
--
-- Conventions:
--   * hashes, keys, addresses and signatures are bytea;
--   * Farcaster timestamps are converted to timestamptz;
--   * every message-derived row has deleted_at, pruned_at and revoked_at, and
--     deleted_at IS NULL means "in the node's current state";
--   * stores with a conflict key (reactions, links, verifications, user_data,
--     username_proofs) keep every version of each key, not only the winner:
--     when the winner is pruned or revoked, the best version the node has not
--     deleted becomes live again, as on the node. marked says the node deleted
--     the version for good (pruned, revoked, or reported deleted by a merge);
--     the live version is the winner among the unmarked ones, unless that is a
--     remove (is_remove = true, always deleted). A partial unique index keeps
--     at most one version of a key live.

CREATE EXTENSION IF NOT EXISTS vector;

-- Every message the sink has seen, as received. Its deletion columns record
-- prunes, revokes and the deletions a merge reports (deleted_messages).
CREATE TABLE messages (
    hash             bytea       PRIMARY KEY,
    fid              bigint      NOT NULL,
    type             smallint    NOT NULL,
    "timestamp"      timestamptz NOT NULL,
    hash_scheme      smallint    NOT NULL,
    signature_scheme smallint    NOT NULL,
    signer           bytea       NOT NULL,
    raw              bytea       NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    pruned_at        timestamptz,
    revoked_at       timestamptz
);
CREATE INDEX messages_fid_timestamp_idx ON messages (fid, "timestamp");

-- Prune, revoke and merge-deletion marks by message hash. They are final for
-- that hash and apply whenever the message itself arrives, before or after.
CREATE TABLE message_marks (
    hash       bytea PRIMARY KEY,
    pruned_at  timestamptz,
    revoked_at timestamptz,
    deleted_at timestamptz
);

-- Casts. A CastRemove that arrives before its CastAdd leaves a tombstone row
-- (text IS NULL, deleted_at set) that the add later fills in, still deleted.
CREATE TABLE casts (
    hash               bytea       PRIMARY KEY,
    fid                bigint      NOT NULL,
    "timestamp"        timestamptz NOT NULL,
    parent_fid         bigint,
    parent_hash        bytea,
    parent_url         text,
    text               text,
    embeds             jsonb       NOT NULL DEFAULT '[]',
    mentions           jsonb       NOT NULL DEFAULT '[]',
    mentions_positions jsonb       NOT NULL DEFAULT '[]',
    type               smallint    NOT NULL DEFAULT 0,
    root_parent_fid    bigint,
    root_parent_hash   bytea,
    root_parent_url    text,
    deleted_at         timestamptz,
    pruned_at          timestamptz,
    revoked_at         timestamptz
) WITH (fillfactor = 90);
-- deleted_at stays out of every casts index so that removes and prunes are
-- HOT updates, which touch no index.
-- URL columns use hash indexes: they are equality-only and have no length limit.
CREATE INDEX casts_fid_timestamp_idx ON casts (fid, "timestamp");
CREATE INDEX casts_parent_hash_idx ON casts (parent_hash) WHERE parent_hash IS NOT NULL;
CREATE INDEX casts_parent_url_idx ON casts USING hash (parent_url) WHERE parent_url IS NOT NULL;
CREATE INDEX casts_root_parent_hash_idx ON casts (root_parent_hash) WHERE root_parent_hash IS NOT NULL;
CREATE INDEX casts_root_parent_url_idx ON casts USING hash (root_parent_url) WHERE root_parent_url IS NOT NULL;
-- Replies whose thread root is not known yet because an ancestor has not
-- arrived. The writer fills their roots in when it does. Normally this index
-- is nearly empty, so the lookup costs little.
CREATE INDEX casts_orphans_idx ON casts (parent_hash) WHERE parent_hash IS NOT NULL AND root_parent_hash IS NULL;

-- Cast embeddings, searchable through the HNSW index. Rows are only ever
-- inserted: a cast's vector does not change, and Search joins casts to skip
-- deleted ones, so a remove or prune never touches this table or its graph.
CREATE TABLE cast_embeddings (
    hash      bytea       PRIMARY KEY,
    fid       bigint      NOT NULL,
    embedding vector(256) NOT NULL
);
CREATE INDEX cast_embeddings_embedding_idx ON cast_embeddings USING hnsw (embedding vector_cosine_ops);

-- Embeddings stored with their casts but not indexed yet. The writer COPYs
-- vectors here in the batch's transaction (an unindexed heap, cheap to
-- append to), and the indexer moves them into cast_embeddings in batches, so
-- HNSW insertion, which is far slower than ingestion, stays off the write
-- path. Rows are deleted as they are moved; vacuum often so the indexer's
-- scans do not wade through dead tuples.
CREATE TABLE cast_embedding_queue (
    hash      bytea       NOT NULL,
    fid       bigint      NOT NULL,
    embedding vector(256) NOT NULL
) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000);

CREATE TABLE reactions (
    hash             bytea       NOT NULL UNIQUE,
    fid              bigint      NOT NULL,
    type             smallint    NOT NULL,
    target_cast_fid  bigint,
    target_cast_hash bytea,
    target_url       text,
    "timestamp"      timestamptz NOT NULL,
    is_remove        boolean     NOT NULL DEFAULT false,
    deleted_at       timestamptz,
    pruned_at        timestamptz,
    revoked_at       timestamptz,
    marked           boolean     NOT NULL DEFAULT false
);
CREATE INDEX reactions_key_idx ON reactions (fid, type, target_cast_hash, target_url);
CREATE UNIQUE INDEX reactions_live_key ON reactions (fid, type, target_cast_hash, target_url) NULLS NOT DISTINCT
    WHERE deleted_at IS NULL;
CREATE INDEX reactions_target_cast_hash_idx ON reactions (target_cast_hash) WHERE target_cast_hash IS NOT NULL;

CREATE TABLE links (
    hash              bytea       NOT NULL UNIQUE,
    fid               bigint      NOT NULL,
    target_fid        bigint      NOT NULL,
    type              text        NOT NULL,
    display_timestamp timestamptz,
    "timestamp"       timestamptz NOT NULL,
    is_remove         boolean     NOT NULL DEFAULT false,
    deleted_at        timestamptz,
    pruned_at         timestamptz,
    revoked_at        timestamptz,
    marked            boolean     NOT NULL DEFAULT false
);
CREATE INDEX links_key_idx ON links (fid, target_fid, type);
CREATE UNIQUE INDEX links_live_key ON links (fid, target_fid, type) WHERE deleted_at IS NULL;
CREATE INDEX links_target_fid_idx ON links (target_fid, type);

-- Every LINK_COMPACT_STATE seen. A link older than any compact state of its
-- (fid, type) whose target_fids lack it is deleted.
CREATE TABLE link_compact_states (
    hash        bytea       PRIMARY KEY,
    fid         bigint      NOT NULL,
    type        text        NOT NULL,
    target_fids bigint[]    NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at  timestamptz,
    pruned_at   timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX link_compact_states_fid_type_idx ON link_compact_states (fid, type, "timestamp");

-- block_hash and signature are NULL on a row whose version is a
-- VerificationRemove, which carries neither.
CREATE TABLE verifications (
    hash              bytea       NOT NULL UNIQUE,
    fid               bigint      NOT NULL,
    signer_address    bytea       NOT NULL,
    block_hash        bytea,
    signature         bytea,
    protocol          smallint    NOT NULL DEFAULT 0,
    verification_type smallint    NOT NULL DEFAULT 0,
    chain_id          bigint      NOT NULL DEFAULT 0,
    "timestamp"       timestamptz NOT NULL,
    is_remove         boolean     NOT NULL DEFAULT false,
    deleted_at        timestamptz,
    pruned_at         timestamptz,
    revoked_at        timestamptz,
    marked            boolean     NOT NULL DEFAULT false
);
CREATE INDEX verifications_key_idx ON verifications (fid, signer_address);
CREATE UNIQUE INDEX verifications_live_key ON verifications (fid, signer_address) WHERE deleted_at IS NULL;
CREATE INDEX verifications_signer_address_idx ON verifications (signer_address);

CREATE TABLE user_data (
    hash        bytea       NOT NULL UNIQUE,
    fid         bigint      NOT NULL,
    type        smallint    NOT NULL,
    value       text        NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at  timestamptz,
    pruned_at   timestamptz,
    revoked_at  timestamptz,
    marked      boolean     NOT NULL DEFAULT false
);
CREATE INDEX user_data_key_idx ON user_data (fid, type);
CREATE UNIQUE INDEX user_data_live_key ON user_data (fid, type) WHERE deleted_at IS NULL;

-- Every proof seen, one row per (name, timestamp, signature). The live one
-- per name is the unmarked proof with the highest timestamp, unless that is
-- for fid 0 (is_deletion), which deletes the name. A proof a merge reported as
-- deleted (deleted_username_proof) or whose message was pruned, revoked or
-- deleted is marked, for good.
CREATE TABLE username_proofs (
    username    text        NOT NULL,
    fid         bigint      NOT NULL,
    type        smallint    NOT NULL,
    owner       bytea,
    signature   bytea       NOT NULL,
    "timestamp" timestamptz NOT NULL,
    is_deletion boolean     NOT NULL DEFAULT false,
    deleted_at  timestamptz,
    pruned_at   timestamptz,
    revoked_at  timestamptz,
    marked      boolean     NOT NULL DEFAULT false,
    CONSTRAINT username_proofs_version UNIQUE (username, "timestamp", signature)
);
CREATE UNIQUE INDEX username_proofs_live_key ON username_proofs (username) WHERE deleted_at IS NULL;
CREATE INDEX username_proofs_fid_idx ON username_proofs (fid);

CREATE TABLE lend_storage (
    hash        bytea       PRIMARY KEY,
    fid         bigint      NOT NULL,
    to_fid      bigint      NOT NULL,
    num_units   bigint      NOT NULL,
    unit_type   smallint    NOT NULL,
    "timestamp" timestamptz NOT NULL,
    deleted_at  timestamptz,
    pruned_at   timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX lend_storage_fid_idx ON lend_storage (fid);
CREATE INDEX lend_storage_to_fid_idx ON lend_storage (to_fid);

-- On-chain events, keyed by where they happened on chain.
CREATE TABLE onchain_events (
    tx_hash         bytea       NOT NULL,
    log_index       integer     NOT NULL,
    type            smallint    NOT NULL,
    fid             bigint      NOT NULL,
    chain_id        bigint      NOT NULL,
    block_number    bigint      NOT NULL,
    block_hash      bytea       NOT NULL,
    block_timestamp timestamptz NOT NULL,
    tx_index        integer     NOT NULL,
    version         integer     NOT NULL DEFAULT 0,
    raw             bytea       NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX onchain_events_fid_type_idx ON onchain_events (fid, type);

CREATE TABLE signer_events (
    tx_hash         bytea       NOT NULL,
    log_index       integer     NOT NULL,
    fid             bigint      NOT NULL,
    key             bytea       NOT NULL,
    key_type        smallint    NOT NULL,
    event_type      smallint    NOT NULL,
    metadata        bytea,
    metadata_type   smallint,
    chain_id        bigint      NOT NULL,
    block_number    bigint      NOT NULL,
    block_hash      bytea       NOT NULL,
    block_timestamp timestamptz NOT NULL,
    tx_index        integer     NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX signer_events_fid_idx ON signer_events (fid);
CREATE INDEX signer_events_key_idx ON signer_events (key);

CREATE TABLE signer_migrated_events (
    tx_hash         bytea       NOT NULL,
    log_index       integer     NOT NULL,
    fid             bigint      NOT NULL,
    migrated_at     bigint      NOT NULL,
    chain_id        bigint      NOT NULL,
    block_number    bigint      NOT NULL,
    block_hash      bytea       NOT NULL,
    block_timestamp timestamptz NOT NULL,
    tx_index        integer     NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);

CREATE TABLE id_register_events (
    tx_hash          bytea       NOT NULL,
    log_index        integer     NOT NULL,
    fid              bigint      NOT NULL,
    to_address       bytea       NOT NULL,
    event_type       smallint    NOT NULL,
    from_address     bytea,
    recovery_address bytea,
    chain_id         bigint      NOT NULL,
    block_number     bigint      NOT NULL,
    block_hash       bytea       NOT NULL,
    block_timestamp  timestamptz NOT NULL,
    tx_index         integer     NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX id_register_events_fid_idx ON id_register_events (fid);
CREATE INDEX id_register_events_to_address_idx ON id_register_events (to_address);

CREATE TABLE storage_rent_events (
    tx_hash         bytea       NOT NULL,
    log_index       integer     NOT NULL,
    fid             bigint      NOT NULL,
    payer           bytea       NOT NULL,
    units           bigint      NOT NULL,
    expiry          bigint      NOT NULL,
    chain_id        bigint      NOT NULL,
    block_number    bigint      NOT NULL,
    block_hash      bytea       NOT NULL,
    block_timestamp timestamptz NOT NULL,
    tx_index        integer     NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX storage_rent_events_fid_idx ON storage_rent_events (fid);

CREATE TABLE tier_purchases (
    tx_hash         bytea       NOT NULL,
    log_index       integer     NOT NULL,
    fid             bigint      NOT NULL,
    tier_type       smallint    NOT NULL,
    for_days        bigint      NOT NULL,
    payer           bytea       NOT NULL,
    chain_id        bigint      NOT NULL,
    block_number    bigint      NOT NULL,
    block_hash      bytea       NOT NULL,
    block_timestamp timestamptz NOT NULL,
    tx_index        integer     NOT NULL,
    PRIMARY KEY (tx_hash, log_index)
);
CREATE INDEX tier_purchases_fid_idx ON tier_purchases (fid);

-- Per-fid registration state, recomputed from the on-chain tables for every
-- fid a batch touches, so it does not depend on the order events arrive in.
CREATE TABLE fids (
    fid              bigint      PRIMARY KEY,
    registered_at    timestamptz,
    custody_address  bytea,
    recovery_address bytea,
    storage_units    bigint      NOT NULL DEFAULT 0,
    tier             smallint    NOT NULL DEFAULT 0,
    tier_expires_at  timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fids_custody_address_idx ON fids (custody_address);

-- Messages and events the sink could not store, with the reason.
CREATE TABLE dead_letters (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at   timestamptz NOT NULL DEFAULT now(),
    source       text        NOT NULL,
    reason       text        NOT NULL,
    detail       text        NOT NULL DEFAULT '',
    shard        integer,
    event_id     bigint,
    message_hash bytea,
    raw          bytea
);
CREATE INDEX dead_letters_created_at_idx ON dead_letters (created_at);

-- Current profile fields per fid, from live user data.
CREATE VIEW profiles AS
SELECT fid,
       max(value) FILTER (WHERE type = 6)  AS username,
       max(value) FILTER (WHERE type = 2)  AS display_name,
       max(value) FILTER (WHERE type = 1)  AS pfp,
       max(value) FILTER (WHERE type = 3)  AS bio,
       max(value) FILTER (WHERE type = 5)  AS url,
       max(value) FILTER (WHERE type = 7)  AS location,
       max(value) FILTER (WHERE type = 8)  AS twitter,
       max(value) FILTER (WHERE type = 9)  AS github,
       max(value) FILTER (WHERE type = 10) AS banner,
       max(value) FILTER (WHERE type = 11) AS primary_address_ethereum,
       max(value) FILTER (WHERE type = 12) AS primary_address_solana
FROM user_data
WHERE deleted_at IS NULL
GROUP BY fid;
