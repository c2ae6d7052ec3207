-- Fewer index entries per stored row on the tables the sink writes most.
-- Every index entry costs the writer a B-tree descent and a WAL record per
-- row, which is most of what a batch costs, while a COPY into an unindexed
-- heap writes whole pages at once.
--
-- Keyed stores (reactions, links, verifications, user_data): the writer
-- looks up the versions of a key that are candidates to be live, which are
-- the live one and the deleted ones not marked. Those were found through an
-- index over every version, beside the live-key unique index that already
-- holds the live ones. Now a partial index holds only the deleted unmarked
-- versions, so each version sits in exactly one of the two key indexes
-- (none once marked), instead of a live version being in both. Reads of the
-- current state (deleted_at IS NULL) use the live-key index as before.
DROP INDEX reactions_key_idx;
CREATE INDEX reactions_dead_key_idx ON reactions (fid, type, target_cast_hash, target_url)
    WHERE deleted_at IS NOT NULL AND NOT marked;

DROP INDEX links_key_idx;
CREATE INDEX links_dead_key_idx ON links (fid, target_fid, type) WHERE deleted_at IS NOT NULL AND NOT marked;

DROP INDEX verifications_key_idx;
CREATE INDEX verifications_dead_key_idx ON verifications (fid, signer_address) WHERE deleted_at IS NOT NULL AND NOT marked;

DROP INDEX user_data_key_idx;
CREATE INDEX user_data_dead_key_idx ON user_data (fid, type) WHERE deleted_at IS NOT NULL AND NOT marked;

-- messages is read by hash (its primary key); a fid's history is read from
-- the typed tables, each indexed by fid. Nothing reads messages by fid, and
-- the index cost an entry for every message stored. Deployments that query
-- raw messages by fid can create it again:
--   CREATE INDEX messages_fid_timestamp_idx ON messages (fid, "timestamp");
DROP INDEX messages_fid_timestamp_idx;

-- With only its key indexed, marking a stored message (a prune, a revoke, a
-- remove's deletion of its add) can be a HOT update, which writes no index
-- entry, when its page has room for the new version, as casts leave.
ALTER TABLE messages SET (fillfactor = 90);
