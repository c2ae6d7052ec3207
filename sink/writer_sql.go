package sink

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	pb "github.com/waypointhq/waypoint/proto"
)

// A source is one kind of staged row: the batch's rows of that kind travel
// as one binary array parameter per column, and a merge statement reads
// them back as a CTE over unnest. Nothing is written to the server before
// the merge; the statements' generic plans do not know how many rows each
// array holds (see Writer.merge). The writer stages each message once per
// batch (rows.seen), so merges keyed by message hash need no
// deduplication.
type source struct {
	id   int
	name string
	cols []column
	oids []uint32 // element type of each column, in order
}

type column struct {
	name string
	typ  string
}

// Element type OIDs of the built-in types staged.
var pgTypes = map[string]uint32{
	"bytea": 17, "int8": 20, "int2": 21, "int4": 23,
	"text": 25, "bool": 16, "timestamptz": 1184,
}

// Source ids, which index the batch's encoded arrays.
const (
	idMarks = iota
	idMessages
	idMessageHashes
	idCasts
	idCastHashes
	idCopiedCasts
	idCastRemoves
	idReactions
	idLinks
	idCompacts
	idVerifications
	idUserData
	idProofs
	idLends
	idOnchain
	numSources
)

// newSource defines a source from "name type" column specs.
func newSource(id int, name string, specs ...string) *source {
	s := &source{id: id, name: name}
	for _, spec := range specs {
		n, typ, _ := strings.Cut(spec, " ")
		t, ok := pgTypes[typ]
		if !ok {
			// A definition in this file is wrong: a build defect.
			panic("sink: unknown staging type " + typ)
		}
		s.cols = append(s.cols, column{name: n, typ: typ})
		s.oids = append(s.oids, t)
	}
	return s
}

// cte returns the source as a CTE whose parameters start at $first.
func (s *source) cte(first int) string {
	var names, args []string
	for i, c := range s.cols {
		names = append(names, c.name)
		args = append(args, fmt.Sprintf("$%d::%s[]", first+i, c.typ))
	}
	return fmt.Sprintf("%s (%s) AS (SELECT * FROM unnest(%s))", s.name, strings.Join(names, ", "), strings.Join(args, ", "))
}

// Row encode methods write the columns in these orders.
var (
	srcMarks    = newSource(idMarks, "s_marks", "hash bytea", "kind int2", "tbl int2")
	srcMessages = newSource(idMessages, "s_messages", "hash bytea", "fid int8", "type int2", "ts timestamptz", "hash_scheme int2",
		"signature_scheme int2", "signer bytea", "raw bytea")
	srcCasts = newSource(idCasts, "s_casts", "hash bytea", "fid int8", "ts timestamptz", "parent_fid int8", "parent_hash bytea",
		"parent_url text", "text text", "embeds text", "mentions text", "mentions_positions text", "type int2",
		"root_fid int8", "root_hash bytea", "root_url text", "top bytea")
	// Marking messages COPYed straight in needs only their hashes, and the
	// orphan walk only the casts'.
	srcMessageHashes = newSource(idMessageHashes, "s_message_hashes", "hash bytea")
	srcCopiedCasts   = newSource(idCopiedCasts, "s_copied_casts", "hash bytea")
	srcCastHashes    = newSource(idCastHashes, "s_cast_hashes", "hash bytea")
	srcCastRemoves   = newSource(idCastRemoves, "s_cast_removes", "hash bytea", "fid int8", "ts timestamptz", "target_hash bytea")
	srcReactions     = newSource(idReactions, "s_reactions", "hash bytea", "fid int8", "ts timestamptz", "is_remove bool", "type int2",
		"target_cast_fid int8", "target_cast_hash bytea", "target_url text")
	srcLinks = newSource(idLinks, "s_links", "hash bytea", "fid int8", "ts timestamptz", "is_remove bool", "type text",
		"target_fid int8", "display_timestamp timestamptz")
	// target_fids travel as int8[] literals: unnest cannot return arrays
	// of differing lengths from one two-dimensional array.
	srcCompacts      = newSource(idCompacts, "s_compacts", "hash bytea", "fid int8", "ts timestamptz", "type text", "target_fids text")
	srcVerifications = newSource(idVerifications, "s_verifications", "hash bytea", "fid int8", "ts timestamptz", "is_remove bool",
		"signer_address bytea", "block_hash bytea", "signature bytea", "protocol int2", "verification_type int2", "chain_id int8")
	srcUserData = newSource(idUserData, "s_user_data", "hash bytea", "fid int8", "ts timestamptz", "type int2", "value text")
	srcProofs   = newSource(idProofs, "s_proofs", "username text", "fid int8", "ts timestamptz", "type int2", "owner bytea",
		"signature bytea", "is_deletion bool", "marked bool")
	srcLends   = newSource(idLends, "s_lends", "hash bytea", "fid int8", "ts timestamptz", "to_fid int8", "num_units int8", "unit_type int2")
	srcOnchain = newSource(idOnchain, "s_onchain", "type int2", "chain_id int8", "block_number int8", "block_hash bytea",
		"block_timestamp timestamptz", "tx_hash bytea", "log_index int4", "tx_index int4", "fid int8", "version int4", "raw bytea",
		"key bytea", "key_type int2", "event_type int2", "metadata bytea", "metadata_type int2", "migrated_at int8",
		"to_address bytea", "from_address bytea", "recovery_address bytea", "payer bytea", "units int8", "expiry int8",
		"tier_type int2", "for_days int8")
)

// Direct COPY targets.
var (
	// The fast path into the messages and casts tables (Writer.copyDirect).
	copyMessages = newCopyTarget("messages", []string{"hash", "fid", "type", `"timestamp"`, "hash_scheme", "signature_scheme",
		"signer", "raw", "deleted_at", "pruned_at", "revoked_at"})
	copyCasts = newCopyTarget("casts", []string{"hash", "fid", `"timestamp"`, "parent_fid", "parent_hash", "parent_url", "text",
		"embeds", "mentions", "mentions_positions", "type", "root_parent_fid", "root_parent_hash", "root_parent_url"})
	copyDeadLetters = newCopyTarget("dead_letters", []string{"source", "reason", "detail", "shard", "event_id", "message_hash", "raw"})
	// Embeddings go straight to the durable queue: it has no key to conflict
	// on, and the indexer drops duplicates and deleted casts.
	copyEmbeddings = newCopyTarget("cast_embedding_queue", []string{"hash", "fid", "embedding"})
)

// mergeStmt is a merge statement with the sources it reads.
type mergeStmt struct {
	table   string
	sql     string
	name    string // of its prepared statement, from its SQL
	sources []*source
	formats []int16 // of each parameter, all binary; the prepared statement has their types
	// counted says the statement returns the rows it changed as one
	// value, rather than in its command tag.
	counted bool
	// check says the counted value is of rows a concurrent transaction
	// committed without this batch's marks: any fails the attempt with
	// errMissedMarks.
	check bool
}

// newMerge prefixes body with the CTEs of srcs; body may start with its own
// WITH [RECURSIVE], whose CTEs follow them.
func newMerge(table, body string, srcs ...*source) *mergeStmt {
	m := &mergeStmt{table: table, sources: srcs}
	var ctes []string
	for _, s := range srcs {
		ctes = append(ctes, s.cte(len(m.formats)+1))
		for range s.cols {
			m.formats = append(m.formats, 1)
		}
	}
	body = strings.TrimSpace(body)
	if len(ctes) == 0 {
		m.sql, m.name = body, stmtName(body)
		return m
	}
	with := "WITH "
	if rest, ok := strings.CutPrefix(body, "WITH RECURSIVE "); ok {
		with, body = "WITH RECURSIVE ", ", "+rest
	} else if rest, ok := strings.CutPrefix(body, "WITH "); ok {
		body = ", " + rest
	} else {
		body = "\n" + body
	}
	m.sql = with + strings.Join(ctes, ",\n     ") + body
	m.name = stmtName(m.sql)
	return m
}

// stmtName names the prepared statement of sql after its text, so that
// every Writer, and a new version with other SQL, agree on the name.
func stmtName(sql string) string {
	h := sha256.Sum256([]byte(sql))
	return "wp_" + hex.EncodeToString(h[:8])
}

// Store tables that marks apply to, numbered for s_marks.tbl.
const (
	tableNone int16 = iota // the message has no store row, only messages
	tableCasts
	tableReactions
	tableLinks
	tableCompacts
	tableVerifications
	tableUserData
	tableLends
)

var storeTables = [...]string{
	tableCasts:         "casts",
	tableReactions:     "reactions",
	tableLinks:         "links",
	tableCompacts:      "link_compact_states",
	tableVerifications: "verifications",
	tableUserData:      "user_data",
	tableLends:         "lend_storage",
}

// storeTable returns the table holding rows of messages of type t.
func storeTable(t pb.MessageType) int16 {
	switch t {
	case pb.MessageType_MESSAGE_TYPE_CAST_ADD:
		return tableCasts
	case pb.MessageType_MESSAGE_TYPE_REACTION_ADD, pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE:
		return tableReactions
	case pb.MessageType_MESSAGE_TYPE_LINK_ADD, pb.MessageType_MESSAGE_TYPE_LINK_REMOVE:
		return tableLinks
	case pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE:
		return tableCompacts
	case pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS, pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE:
		return tableVerifications
	case pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD:
		return tableUserData
	case pb.MessageType_MESSAGE_TYPE_LEND_STORAGE:
		return tableLends
	}
	return tableNone
}

// Marks first: every later statement reads message_marks, so a message and
// its prune in the same batch behave as in separate ones.
const sqlMarks = `
INSERT INTO message_marks AS mm (hash, pruned_at, revoked_at, deleted_at)
SELECT hash,
       CASE WHEN bool_or(kind = 1) THEN now() END,
       CASE WHEN bool_or(kind = 2) THEN now() END,
       now()
FROM s_marks GROUP BY hash
ON CONFLICT (hash) DO UPDATE SET
    pruned_at  = coalesce(mm.pruned_at, excluded.pruned_at),
    revoked_at = coalesce(mm.revoked_at, excluded.revoked_at)
WHERE (mm.pruned_at IS NULL AND excluded.pruned_at IS NOT NULL)
   OR (mm.revoked_at IS NULL AND excluded.revoked_at IS NOT NULL)`

// sqlMessages stores the messages copyDirect left: mostly those a prune,
// revoke or merge-reported deletion carries, stored long before. The NOT
// EXISTS drops a stored one with a probe of the key index alone, before its
// row is built and its marks looked up, which halves the statement's cost
// when, as usual, nearly all of them are stored; ON CONFLICT still settles
// a row another transaction is inserting.
const sqlMessages = `
INSERT INTO messages (hash, fid, type, "timestamp", hash_scheme, signature_scheme, signer, raw, deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.type, s.ts, s.hash_scheme, s.signature_scheme, s.signer, s.raw, mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM s_messages s LEFT JOIN message_marks mm ON mm.hash = s.hash
WHERE NOT EXISTS (SELECT FROM messages x WHERE x.hash = s.hash)
ON CONFLICT (hash) DO NOTHING`

// sqlCopiedMarked gives the rows COPYed into %[1]s by this batch (which
// marks none of them) the deletion columns of marks stored before, as the
// merge would have. It probes message_marks first, so the much larger table
// index is only touched for the rare hashes found there. %[2]s holds the
// hashes.
//
// The found marks drive the join, one probe of the table's key index each.
// Fetching the table's rows by an array of the found hashes instead, the
// generic plan, which expects a few of each, joins them to the marks by a
// nested loop over both: quadratic in the marks, over 300 ms for a batch of
// 5,000 messages of which 3,200 are marked.
const sqlCopiedMarked = `
WITH m AS MATERIALIZED (
    SELECT mm.hash, mm.deleted_at, mm.pruned_at, mm.revoked_at
    FROM message_marks mm WHERE mm.hash IN (SELECT hash FROM %[2]s)
)
UPDATE %[1]s t SET deleted_at = m.deleted_at, pruned_at = m.pruned_at, revoked_at = m.revoked_at
FROM m WHERE t.hash = m.hash`

// A cast add fills a tombstone left by an earlier remove (text IS NULL) and
// keeps its deletion; an add removed in the same batch is stored deleted.
//
// Thread roots are set as casts are inserted, so a reply is written once,
// not inserted and then updated (an update of an indexed column rewrites
// every index entry of the row). The writer resolves chains within the
// batch (rows.resolveRoots); a chain that leaves it takes the root of its
// first outside ancestor, when that one is stored and its root known. A
// reply whose chain is still broken is stored without a root and fixed by
// sqlOrphans when the missing cast arrives.
const sqlCasts = `
INSERT INTO casts AS c (hash, fid, "timestamp", parent_fid, parent_hash, parent_url, text, embeds, mentions, mentions_positions, type,
                        root_parent_fid, root_parent_hash, root_parent_url, deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.ts, s.parent_fid, s.parent_hash, s.parent_url, s.text, s.embeds::jsonb, s.mentions::jsonb,
       s.mentions_positions::jsonb, s.type,
       CASE WHEN s.root_hash IS NOT NULL THEN s.root_fid WHEN p.parent_hash IS NULL THEN p.fid ELSE p.root_parent_fid END,
       CASE WHEN s.root_hash IS NOT NULL THEN s.root_hash WHEN p.parent_hash IS NULL THEN p.hash ELSE p.root_parent_hash END,
       CASE WHEN s.parent_hash IS NULL THEN s.parent_url WHEN s.root_hash IS NOT NULL THEN s.root_url
            WHEN p.parent_hash IS NULL THEN p.parent_url ELSE p.root_parent_url END,
       coalesce(mm.deleted_at, r.ts), mm.pruned_at, mm.revoked_at
FROM s_casts s
LEFT JOIN casts p ON p.hash = s.top AND p.text IS NOT NULL AND (p.parent_hash IS NULL OR p.root_parent_hash IS NOT NULL)
LEFT JOIN message_marks mm ON mm.hash = s.hash
LEFT JOIN (SELECT target_hash, fid, min(ts) AS ts FROM s_cast_removes GROUP BY 1, 2) r ON r.target_hash = s.hash AND r.fid = s.fid
ON CONFLICT (hash) DO UPDATE SET
    "timestamp" = excluded."timestamp", parent_fid = excluded.parent_fid, parent_hash = excluded.parent_hash,
    parent_url = excluded.parent_url, text = excluded.text, embeds = excluded.embeds, mentions = excluded.mentions,
    mentions_positions = excluded.mentions_positions, type = excluded.type, root_parent_fid = excluded.root_parent_fid,
    root_parent_hash = excluded.root_parent_hash, root_parent_url = excluded.root_parent_url,
    pruned_at = coalesce(c.pruned_at, excluded.pruned_at), revoked_at = coalesce(c.revoked_at, excluded.revoked_at)
WHERE c.text IS NULL AND c.fid = excluded.fid`

// A remove deletes its target, or leaves a tombstone for an add still to come.
const sqlCastRemoves = `
INSERT INTO casts AS c (hash, fid, "timestamp", deleted_at)
SELECT DISTINCT ON (target_hash) target_hash, fid, ts, ts
FROM s_cast_removes ORDER BY target_hash, ts
ON CONFLICT (hash) DO UPDATE SET deleted_at = excluded.deleted_at
WHERE c.deleted_at IS NULL AND c.fid = excluded.fid`

// Stored replies that lacked a root because their parent had not arrived:
// start at those whose parent is in the batch (and now has a known root)
// and walk down their still rootless descendants. casts_orphans_idx holds
// exactly the rootless replies, so in the usual case, when there are none,
// this costs one probe of a nearly empty index per cast.
const sqlOrphans = `
WITH RECURSIVE walk (hash, rfid, rhash, rurl) AS (
    SELECT o.hash,
           CASE WHEN p.parent_hash IS NULL THEN p.fid        ELSE p.root_parent_fid  END,
           CASE WHEN p.parent_hash IS NULL THEN p.hash       ELSE p.root_parent_hash END,
           CASE WHEN p.parent_hash IS NULL THEN p.parent_url ELSE p.root_parent_url  END
    FROM casts o JOIN casts p ON p.hash = o.parent_hash
    WHERE o.parent_hash IN (SELECT hash FROM s_cast_hashes) AND o.parent_hash IS NOT NULL AND o.root_parent_hash IS NULL
      AND p.text IS NOT NULL AND (p.parent_hash IS NULL OR p.root_parent_hash IS NOT NULL)
    UNION
    SELECT o.hash, w.rfid, w.rhash, w.rurl
    FROM walk w JOIN casts o ON o.parent_hash = w.hash
    WHERE o.parent_hash IS NOT NULL AND o.root_parent_hash IS NULL
)
UPDATE casts c SET root_parent_fid = w.rfid, root_parent_hash = w.rhash, root_parent_url = w.rurl
FROM (SELECT DISTINCT ON (hash) * FROM walk ORDER BY hash) w
WHERE c.hash = w.hash AND c.root_parent_hash IS NULL`

const sqlCompacts = `
INSERT INTO link_compact_states (hash, fid, type, target_fids, "timestamp", deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.type, s.target_fids::int8[], s.ts, mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM s_compacts s LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (hash) DO NOTHING`

// A compact state supersedes older compact states, and the links of its
// (fid, type) are decided again: keyedLinks.gone takes out the adds the
// newest state omits and is newer than, so a link swept by an older state
// and listed by a newer one, merged after it, is live again. Links as old
// as the state are left to its merge event, which reports those the node
// swept (a tie is swept when merged before the state, kept when after).
const sqlCompactSupersede = `
UPDATE link_compact_states t SET deleted_at = n."timestamp"
FROM link_compact_states n
WHERE (t.fid, t.type) IN (SELECT fid, type FROM s_compacts)
  AND n.fid = t.fid AND n.type = t.type AND (n."timestamp", n.hash) > (t."timestamp", t.hash)
  AND t.deleted_at IS NULL`

// keyedStore describes a table that keeps every version of a conflict key
// (reactions, links, verifications, user_data). The node's state is
// recomputed for every key the batch touches, marks included (a marked
// message is staged with its mark): the live version is the winner by
// (timestamp, remove beats add, hash) among the versions not marked, and no
// version when that winner is a remove. Losers are kept, because a loser
// becomes the winner when the versions above it are pruned or revoked.
//
// One statement per batch computes the candidates once and applies them in
// order: kill (the stored live versions that no longer win), revive (a
// stored version that wins again, after a mark on the versions above it)
// and insert (the staged versions, the winner live). The order matters
// because the live-key unique index is checked row by row: the old winner
// must be dead before the new one is live. A row updated earlier in the same
// statement no longer counts for that check, and the final SELECT reads the
// three data-modifying CTEs one after the other (each scalar subquery runs
// to the end when first evaluated, left to right), so each runs to
// completion before the next starts.
//
// Revivals also test the row's own marked flag, which the candidates read
// from the statement's snapshot: a row marked since (reconciliation marking
// it while this statement waited on its lock) is read again as it is once
// the lock is released, and a marked version never lives again.
type keyedStore struct {
	table string
	src   *source
	// key lists the conflict key's columns, named alike in src and table.
	key []string
	// lookups are join conditions of table t on the distinct keys k, each
	// one indexable; their matches are unioned. (IS NOT DISTINCT FROM,
	// which NULL key columns would need, cannot use an index.)
	lookups []string
	// remove is the expression, over alias x, saying a version is a
	// remove; "false" where the table has none.
	remove func(x string) string
	// gone, when set, is a condition over a candidate (alias x with the
	// staged columns' names) that takes it out of the running, besides
	// marks; NULL keeps it. It may read the CTEs goneWith defines (over the
	// keys k) through the joins goneJoin adds to the candidates.
	gone, goneWith, goneJoin string
	// cols and vals are the inserted columns and their values over the
	// staged row s, except the deletion columns.
	cols, vals string
}

// storedCandidates are the two states a stored candidate can be in, each
// the predicate of one of the table's key indexes: the live-key index holds
// the live version, <table>_dead_key_idx the deleted ones not marked.
var storedCandidates = []string{"t.deleted_at IS NULL", "t.deleted_at IS NOT NULL AND NOT t.marked"}

// candidates returns the CTEs k (the batch's keys), sm and c: c has one
// row per candidate version (staged rows, then stored ones, so a version
// may appear twice) with win, the hash of its key's winner.
func (k *keyedStore) candidates() string {
	return k.candidatesOf(fmt.Sprintf("SELECT DISTINCT %s FROM %s", strings.Join(k.key, ", "), k.src.name), true) + ",\n"
}

// candidatesOf is candidates for the keys query keys selects, with or
// without the staged rows (and their marks, sm).
func (k *keyedStore) candidatesOf(keys string, staged bool) string {
	var sk, tk []string
	for _, c := range k.key {
		sk = append(sk, "s."+c)
		tk = append(tk, "t."+c)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "WITH k AS (%s),\n", keys)
	sep := "\n"
	if staged {
		// The marks of staged versions, read once for the candidates and
		// the insert.
		fmt.Fprintf(&b, "sm AS MATERIALIZED (SELECT mm.* FROM %s s JOIN message_marks mm ON mm.hash = s.hash),\nc0 AS (", k.src.name)
		fmt.Fprintf(&b, "\n    SELECT false AS stored, false AS live, s.hash, s.ts, %s AS is_remove, %s FROM %s s\n",
			k.remove("s"), strings.Join(sk, ", "), k.src.name)
		b.WriteString("    WHERE NOT EXISTS (SELECT 1 FROM sm WHERE sm.hash = s.hash)")
		sep = "\n    UNION ALL\n"
	} else {
		b.WriteString("c0 AS (")
	}
	// Each lookup probes its index once per key, through a subquery that
	// OFFSET 0 keeps the planner from flattening into a join: it would
	// otherwise hash every live version of a table that has no statistics
	// yet (a new deployment's first minutes of backfill), which it takes for
	// a few rows, and then that costs as much as the table is large.
	for _, l := range k.lookups {
		for _, state := range storedCandidates {
			fmt.Fprintf(&b, "%s    SELECT true AS stored, t.deleted_at IS NULL AS live, t.hash, t.\"timestamp\" AS ts, %s AS is_remove, %s FROM k,\n"+
				"        LATERAL (SELECT * FROM %s t WHERE %s AND %s OFFSET 0) t",
				sep, k.remove("t"), strings.Join(tk, ", "), k.table, l, state)
			sep = "\n    UNION ALL\n"
		}
	}
	b.WriteString("\n),\n")
	if k.goneWith != "" {
		b.WriteString(k.goneWith + ",\n")
	}
	var xk []string
	for _, c := range k.key {
		xk = append(xk, "x."+c)
	}
	b.WriteString("c AS (\n    SELECT x.stored, x.live, x.hash, x.is_remove,\n")
	fmt.Fprintf(&b, "           first_value(x.hash) OVER (PARTITION BY %s ORDER BY x.ts DESC, x.is_remove DESC, x.hash DESC) AS win\n    FROM c0 x",
		strings.Join(xk, ", "))
	if k.goneJoin != "" {
		b.WriteString("\n    " + k.goneJoin)
	}
	if k.gone != "" {
		b.WriteString("\n    WHERE (" + k.gone + ") IS NOT TRUE")
	}
	b.WriteString("\n)")
	return b.String()
}

// merge returns the store's statement, which reports in one row the
// versions it killed, revived and inserted.
func (k *keyedStore) merge() *mergeStmt {
	m := newMerge(k.table, k.candidates()+fmt.Sprintf(`killed AS (
    UPDATE %[1]s t SET deleted_at = now()
    FROM c WHERE c.stored AND c.live AND c.hash <> c.win AND t.hash = c.hash
    RETURNING 1
),
revived AS (
    UPDATE %[1]s t SET deleted_at = NULL
    FROM c WHERE c.stored AND NOT c.live AND c.hash = c.win AND NOT c.is_remove AND t.hash = c.hash AND NOT t.marked
    RETURNING 1
),
inserted AS (
    INSERT INTO %[1]s (%[2]s, deleted_at, pruned_at, revoked_at, marked)
    SELECT %[3]s,
           CASE WHEN mm.hash IS NOT NULL THEN mm.deleted_at WHEN %[4]s THEN s.ts WHEN c.win = s.hash THEN NULL ELSE now() END,
           mm.pruned_at, mm.revoked_at, mm.hash IS NOT NULL
    FROM %[5]s s
    LEFT JOIN sm mm ON mm.hash = s.hash
    LEFT JOIN c ON c.hash = s.hash AND NOT c.stored
    ON CONFLICT (hash) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM killed) + (SELECT count(*) FROM revived) + (SELECT count(*) FROM inserted)`,
		k.table, k.cols, k.vals, k.remove("s"), k.src.name), k.src)
	m.counted = true
	return m
}

// compactKeys selects the link keys whose winner the batch's compact states
// can change, among those of their (fid, type) pairs: a key with a live
// version older than the pair's newest state and not listed by it (the
// state takes it out), and a key with a dead, unmarked add listed by it
// (an older state may have taken it out). No other key's winner depends on
// the newest state: the adds of one key share its target, so an older
// state took out all of a key's adds older than it or none, and a live
// version that the newest state lists, or that is newer than it, wins as
// before. Recomputing only these keys, rather than every link of the pair,
// keeps a compact state of an account following thousands cheap.
var compactKeys = "WITH " + newestCompactStates("SELECT DISTINCT fid, type FROM s_compacts") + `
    SELECT l.fid, l.target_fid, l.type FROM lc_newest n JOIN links l ON l.fid = n.fid AND l.type = n.type
    WHERE l.deleted_at IS NULL AND l."timestamp" < n.ts
      AND NOT EXISTS (SELECT 1 FROM lc_listed x WHERE x.fid = l.fid AND x.type = l.type AND x.target_fid = l.target_fid)
    UNION
    SELECT l.fid, l.target_fid, l.type FROM lc_listed x
    JOIN links l ON l.fid = x.fid AND l.target_fid = x.target_fid AND l.type = x.type
    WHERE l.deleted_at IS NOT NULL AND NOT l.marked AND NOT l.is_remove`

// newestCompactStates returns the CTEs lc_newest, the newest compact state
// (fid, type, ts, target_fids) of each (fid, type) pair the query pairs
// selects, found by one index probe each, and lc_listed, the targets those
// states list as (fid, type, target_fid) rows, for hash joins.
func newestCompactStates(pairs string) string {
	return `lc_newest AS (
    SELECT n.* FROM (` + pairs + `) p,
    LATERAL (SELECT lc.fid, lc.type, lc."timestamp" AS ts, lc.target_fids FROM link_compact_states lc
             WHERE lc.fid = p.fid AND lc.type = p.type ORDER BY lc."timestamp" DESC, lc.hash DESC LIMIT 1) n
),
lc_listed AS (SELECT DISTINCT n.fid, n.type, unnest(n.target_fids) AS target_fid FROM lc_newest n)`
}

// recompute makes the table agree with the winners of the keys query keys
// selects: a live version that is not its key's winner (or is out of the
// running) dies, then a winner that is an add and not live lives.
func (k *keyedStore) recompute(keys string, srcs ...*source) [2]*mergeStmt {
	var match []string
	for _, c := range k.key {
		match = append(match, fmt.Sprintf("t.%s = k.%s", c, c))
	}
	cands := k.candidatesOf(keys, false) + "\n"
	kill := newMerge(k.table, cands+fmt.Sprintf(`UPDATE %s t SET deleted_at = now()
FROM k WHERE %s AND t.deleted_at IS NULL
  AND NOT EXISTS (SELECT 1 FROM c WHERE c.hash = t.hash AND c.win = t.hash AND NOT c.is_remove)`, k.table, strings.Join(match, " AND ")), srcs...)
	revive := newMerge(k.table, cands+fmt.Sprintf(`UPDATE %s t SET deleted_at = NULL
FROM c WHERE c.stored AND NOT c.live AND c.hash = c.win AND NOT c.is_remove AND t.hash = c.hash AND NOT t.marked`, k.table), srcs...)
	return [2]*mergeStmt{kill, revive}
}

func isRemove(x string) string { return x + ".is_remove" }

var (
	keyedReactions = &keyedStore{
		table: "reactions", src: srcReactions, remove: isRemove,
		key: []string{"fid", "type", "target_cast_hash", "target_url"},
		lookups: []string{
			"t.fid = k.fid AND t.type = k.type AND t.target_cast_hash = k.target_cast_hash",
			"t.fid = k.fid AND t.type = k.type AND t.target_cast_hash IS NULL AND k.target_cast_hash IS NULL AND t.target_url = k.target_url",
		},
		cols: `hash, fid, type, target_cast_fid, target_cast_hash, target_url, "timestamp", is_remove`,
		vals: "s.hash, s.fid, s.type, s.target_cast_fid, s.target_cast_hash, s.target_url, s.ts, s.is_remove",
	}
	// A link add is also out when the newest compact state of its (fid,
	// type), by (timestamp, hash) as sqlCompactSupersede orders them, is
	// newer and does not list its target: the node deletes it, and rejects
	// it later. An older state does not count: a link it omits may have been
	// merged after a newer state that lists it.
	keyedLinks = &keyedStore{
		table: "links", src: srcLinks, remove: isRemove,
		key:     []string{"fid", "target_fid", "type"},
		lookups: []string{"t.fid = k.fid AND t.target_fid = k.target_fid AND t.type = k.type"},
		gone:    "NOT x.is_remove AND n.ts > x.ts AND l.target_fid IS NULL",
		// The newest state of each (fid, type) of the keys, by one index
		// probe, and the targets it lists as rows, which the candidates
		// are hash-joined with: testing each candidate against every
		// state's target_fids array instead costs candidates × states ×
		// targets, seconds for an account following thousands.
		goneWith: newestCompactStates("SELECT DISTINCT fid, type FROM k"),
		goneJoin: `LEFT JOIN lc_newest n ON n.fid = x.fid AND n.type = x.type
    LEFT JOIN lc_listed l ON l.fid = x.fid AND l.type = x.type AND l.target_fid = x.target_fid`,
		cols: `hash, fid, target_fid, type, display_timestamp, "timestamp", is_remove`,
		vals: "s.hash, s.fid, s.target_fid, s.type, s.display_timestamp, s.ts, s.is_remove",
	}
	keyedVerifications = &keyedStore{
		table: "verifications", src: srcVerifications, remove: isRemove,
		key:     []string{"fid", "signer_address"},
		lookups: []string{"t.fid = k.fid AND t.signer_address = k.signer_address"},
		cols:    `hash, fid, signer_address, block_hash, signature, protocol, verification_type, chain_id, "timestamp", is_remove`,
		vals:    "s.hash, s.fid, s.signer_address, s.block_hash, s.signature, s.protocol, s.verification_type, s.chain_id, s.ts, s.is_remove",
	}
	keyedUserData = &keyedStore{
		table: "user_data", src: srcUserData, remove: func(string) string { return "false" },
		key:     []string{"fid", "type"},
		lookups: []string{"t.fid = k.fid AND t.type = k.type"},
		cols:    `hash, fid, type, value, "timestamp"`,
		vals:    "s.hash, s.fid, s.type, s.value, s.ts",
	}
)

// Fname proofs keep every version by (name, timestamp, signature). A proof
// staged as marked (one a merge reported deleted, or whose message was
// pruned, revoked or deleted) marks its version for good. Versions are
// stored deleted, then sqlProofsKill and sqlProofsRevive make the winner
// among the unmarked ones live: the highest timestamp, on a tie a fid-0
// deletion, then the higher signature and fid, so any order converges; a
// winning deletion leaves the name deleted.
const sqlProofs = `
INSERT INTO username_proofs AS t (username, fid, type, owner, signature, "timestamp", is_deletion, deleted_at, marked)
SELECT DISTINCT ON (username, ts, signature) username, fid, type, owner, signature, ts, is_deletion, now(),
       bool_or(marked) OVER (PARTITION BY username, ts, signature)
FROM s_proofs ORDER BY username, ts, signature, is_deletion DESC, fid DESC
ON CONFLICT (username, "timestamp", signature) DO UPDATE SET marked = true, deleted_at = coalesce(t.deleted_at, now())
WHERE excluded.marked AND NOT t.marked`

// proofCandidates ranks the unmarked versions of the names the query
// names selects.
func proofCandidates(names string) string {
	return fmt.Sprintf(`
WITH c AS (
    SELECT t.username, t."timestamp", t.signature, t.is_deletion, t.deleted_at IS NULL AS live,
           row_number() OVER (PARTITION BY t.username ORDER BY t."timestamp" DESC, t.is_deletion DESC, t.signature DESC, t.fid DESC) AS rn
    FROM username_proofs t
    WHERE t.username IN (%s) AND NOT t.marked
)
`, names)
}

// proofsKill and proofsRevive are sqlProofs' followers for the names the
// query names selects.
func proofsKill(names string) string {
	return proofCandidates(names) + `UPDATE username_proofs t SET deleted_at = now()
FROM c WHERE c.live AND c.rn > 1
  AND t.username = c.username AND t."timestamp" = c."timestamp" AND t.signature = c.signature`
}

func proofsRevive(names string) string {
	return proofCandidates(names) + `UPDATE username_proofs t SET deleted_at = NULL
FROM c WHERE NOT c.live AND c.rn = 1 AND NOT c.is_deletion
  AND t.username = c.username AND t."timestamp" = c."timestamp" AND t.signature = c.signature AND NOT t.marked`
}

const stagedProofNames = "SELECT username FROM s_proofs"

const sqlLends = `
INSERT INTO lend_storage (hash, fid, to_fid, num_units, unit_type, "timestamp", deleted_at, pruned_at, revoked_at)
SELECT s.hash, s.fid, s.to_fid, s.num_units, s.unit_type, s.ts, mm.deleted_at, mm.pruned_at, mm.revoked_at
FROM s_lends s LEFT JOIN message_marks mm ON mm.hash = s.hash
ON CONFLICT (hash) DO NOTHING`

// sqlApplyMarks marks rows stored before this batch whose message this
// batch prunes, revokes or reports deleted; rows the batch inserts take their
// marks from message_marks as they are inserted. The verbs are: the table,
// extra assignments, the condition on s_marks that picks the marks of
// messages the table holds, and an extra reason to update a row.
const sqlApplyMarks = `
UPDATE %s t SET deleted_at = coalesce(t.deleted_at, mm.deleted_at),
                pruned_at  = coalesce(t.pruned_at, mm.pruned_at),
                revoked_at = coalesce(t.revoked_at, mm.revoked_at)%s
FROM message_marks mm
WHERE ` + markMissing

// sqlMessagesMarks is sqlApplyMarks of the messages table for a batch whose
// messages copyDirect stored: it also gives those rows (s_message_hashes)
// the marks stored before, as sqlCopiedMarked does, and the same way. Marks
// of this batch that name copied rows (adds the batch also removes) are
// applied here, after the insert, as the messages table's marks are (see
// Writer.statements).
const sqlMessagesMarks = `
WITH m AS MATERIALIZED (
    SELECT mm.hash, mm.deleted_at, mm.pruned_at, mm.revoked_at
    FROM message_marks mm WHERE mm.hash IN (SELECT hash FROM s_marks UNION ALL SELECT hash FROM s_message_hashes)
)
UPDATE messages t SET deleted_at = coalesce(t.deleted_at, m.deleted_at),
                      pruned_at  = coalesce(t.pruned_at, m.pruned_at),
                      revoked_at = coalesce(t.revoked_at, m.revoked_at)
FROM m
WHERE t.hash = m.hash
  AND (t.deleted_at IS NULL OR (t.pruned_at IS NULL AND m.pruned_at IS NOT NULL) OR (t.revoked_at IS NULL AND m.revoked_at IS NOT NULL))`

// sqlMissedMarks counts the rows of a table that still lack the batch's
// marks after its stores (see Writer.statements). Its verbs are
// sqlApplyMarks' but for the assignments.
const sqlMissedMarks = `
SELECT count(*) FROM %s t, message_marks mm
WHERE ` + markMissing

// markMissing picks the rows of t that lack a mark in mm of a message that
// s_marks names.
const markMissing = `mm.hash IN (SELECT hash FROM s_marks WHERE %s) AND t.hash = mm.hash
  AND (t.deleted_at IS NULL OR (t.pruned_at IS NULL AND mm.pruned_at IS NOT NULL) OR (t.revoked_at IS NULL AND mm.revoked_at IS NOT NULL)%s)`

// The merge statements with their sources.
var (
	mergeMarks          = newMerge("message_marks", sqlMarks, srcMarks)
	mergeMessages       = newMerge("messages", sqlMessages, srcMessages)
	mergeMessagesMarks  = newMerge("messages", sqlMessagesMarks, srcMarks, srcMessageHashes)
	mergeCastsMarked    = newMerge("casts", fmt.Sprintf(sqlCopiedMarked, "casts", srcCopiedCasts.name), srcCopiedCasts)
	mergeCasts          = newMerge("casts", sqlCasts, srcCasts, srcCastRemoves)
	mergeCastRemoves    = newMerge("casts", sqlCastRemoves, srcCastRemoves)
	mergeOrphans        = newMerge("casts", sqlOrphans, srcCastHashes)
	mergeCompacts       = newMerge("link_compact_states", sqlCompacts, srcCompacts)
	mergeCompactLinks   = keyedLinks.recompute(compactKeys, srcCompacts)
	mergeCompactSupsede = newMerge("link_compact_states", sqlCompactSupersede, srcCompacts)
	mergeProofs         = newMerge("username_proofs", sqlProofs, srcProofs)
	mergeProofsKill     = newMerge("username_proofs", proofsKill(stagedProofNames), srcProofs)
	mergeProofsRevive   = newMerge("username_proofs", proofsRevive(stagedProofNames), srcProofs)
	mergeLends          = newMerge("lend_storage", sqlLends, srcLends)
	// mergeKeyed[t] is the statement of keyed store table t.
	mergeKeyed = func() (m [len(storeTables)]*mergeStmt) {
		for t, k := range map[int16]*keyedStore{tableReactions: keyedReactions, tableLinks: keyedLinks,
			tableVerifications: keyedVerifications, tableUserData: keyedUserData} {
			m[t] = k.merge()
		}
		return m
	}()
	// mergeApplyMarks[t] applies marks to store table t; the messages
	// table, which holds every type, takes them all.
	// mergeMissedMarks[t] is table t's sqlMissedMarks.
	mergeApplyMarks, mergeApplyMarksMessages, mergeMissedMarks = func() (apply [len(storeTables)]*mergeStmt, messages *mergeStmt, missed [len(storeTables)]*mergeStmt) {
		for t, name := range storeTables {
			if name == "" {
				continue
			}
			set, cond := "", ""
			if mergeKeyed[t] != nil {
				set, cond = ", marked = true", " OR NOT t.marked"
			}
			which := fmt.Sprintf("tbl = %d", t)
			apply[t] = newMerge(name, fmt.Sprintf(sqlApplyMarks, name, set, which, cond), srcMarks)
			missed[t] = newMerge(name, fmt.Sprintf(sqlMissedMarks, name, which, cond), srcMarks)
			missed[t].counted, missed[t].check = true, true
		}
		return apply, newMerge("messages", fmt.Sprintf(sqlApplyMarks, "messages", "", "true", ""), srcMarks), missed
	}()
	mergeOnchain = func() []*mergeStmt {
		m := []*mergeStmt{newMerge("onchain_events", sqlOnchain, srcOnchain)}
		for _, t := range sqlOnchainTyped {
			m = append(m, newMerge(t.table, t.sql, srcOnchain))
		}
		return append(m, newMerge("fids", sqlFids, srcOnchain))
	}()
)

const sqlOnchain = `
INSERT INTO onchain_events (tx_hash, log_index, type, fid, chain_id, block_number, block_hash, block_timestamp, tx_index, version, raw)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, type, fid, chain_id, block_number, block_hash, block_timestamp, tx_index, version, raw
FROM s_onchain
ON CONFLICT (tx_hash, log_index) DO NOTHING`

var sqlOnchainTyped = []struct{ table, sql string }{
	{"signer_events", `
INSERT INTO signer_events (tx_hash, log_index, fid, key, key_type, event_type, metadata, metadata_type, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, key, key_type, event_type, metadata, metadata_type, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM s_onchain WHERE type = 1
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"signer_migrated_events", `
INSERT INTO signer_migrated_events (tx_hash, log_index, fid, migrated_at, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, migrated_at, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM s_onchain WHERE type = 2
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"id_register_events", `
INSERT INTO id_register_events (tx_hash, log_index, fid, to_address, event_type, from_address, recovery_address, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, to_address, event_type, from_address, recovery_address, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM s_onchain WHERE type = 3
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"storage_rent_events", `
INSERT INTO storage_rent_events (tx_hash, log_index, fid, payer, units, expiry, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, payer, units, expiry, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM s_onchain WHERE type = 4
ON CONFLICT (tx_hash, log_index) DO NOTHING`},
	{"tier_purchases", `
INSERT INTO tier_purchases (tx_hash, log_index, fid, tier_type, for_days, payer, chain_id, block_number, block_hash, block_timestamp, tx_index)
SELECT DISTINCT ON (tx_hash, log_index) tx_hash, log_index, fid, tier_type, for_days, payer, chain_id, block_number, block_hash, block_timestamp, tx_index
FROM s_onchain WHERE type = 5
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
FROM (SELECT DISTINCT fid FROM s_onchain) t
ON CONFLICT (fid) DO UPDATE SET
    registered_at = excluded.registered_at, custody_address = excluded.custody_address,
    recovery_address = excluded.recovery_address, storage_units = excluded.storage_units,
    tier = excluded.tier, tier_expires_at = excluded.tier_expires_at, updated_at = excluded.updated_at
WHERE (f.registered_at, f.custody_address, f.recovery_address, f.storage_units, f.tier, f.tier_expires_at)
      IS DISTINCT FROM (excluded.registered_at, excluded.custody_address, excluded.recovery_address, excluded.storage_units, excluded.tier, excluded.tier_expires_at)`

// fidWinners are, per table that keeps every version of a key, the
// statements that make a fid's live versions its keys' winners again, $1
// being the fid.
var fidWinners = func() map[string][]string {
	m := map[string][]string{}
	for _, k := range []*keyedStore{keyedReactions, keyedLinks, keyedVerifications, keyedUserData} {
		for _, st := range k.recompute(fmt.Sprintf("SELECT DISTINCT %s FROM %s WHERE fid = $1", strings.Join(k.key, ", "), k.table)) {
			m[k.table] = append(m[k.table], st.sql)
		}
	}
	names := "SELECT username FROM username_proofs WHERE fid = $1"
	m["username_proofs"] = []string{proofsKill(names), proofsRevive(names)}
	return m
}()

// Execer runs a statement; *pgxpool.Pool, *pgx.Conn and pgx.Tx are ones.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// ReviveWinners makes the live versions of fid's keys in table (reactions,
// links, verifications, user_data or username_proofs; other tables keep no
// versions and are left alone) the winners among the unmarked versions.
// The writer does this for the keys a batch touches; a mark set outside it,
// as a reconciliation marks rows the node no longer has, must be followed
// by this, or the version the node has in their place stays deleted: one
// that lost to the marked row, written before the mark, is never revived.
func ReviveWinners(ctx context.Context, db Execer, table string, fid uint64) error {
	for _, sql := range fidWinners[table] {
		if _, err := db.Exec(ctx, sql, int64(fid)); err != nil {
			return fmt.Errorf("revive winners of fid %d in %s: %w", fid, table, err)
		}
	}
	return nil
}
