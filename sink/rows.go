package sink

import (
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
	"google.golang.org/protobuf/proto"

	"github.com/waypointhq/waypoint/message"
	pb "github.com/waypointhq/waypoint/proto"
)

// Mark kinds: why a message is deleted for good, whenever it arrives.
const (
	markPruned  int16 = 1
	markRevoked int16 = 2
	markDeleted int16 = 3
)

// maxKeyBytes bounds text and bytes that are part of a btree key. Hubs limit
// these fields to a few hundred bytes; longer values could not be indexed and
// would fail the whole batch, so such messages go to dead_letters.
const maxKeyBytes = 1024

// maxUnixSeconds bounds timestamps given in Unix seconds (fname proofs,
// blocks) to what timestamptz can hold with room to spare.
const maxUnixSeconds = 1 << 37

// Staging rows. Each encode method appends the row to a binary COPY body in
// the column order of its source (writer_sql.go).

type messageRow struct {
	hash       []byte
	fid        int64
	typ        int16
	ts         time.Time
	hashScheme int16
	sigScheme  int16
	signer     []byte
	raw        []byte
}

func (r *messageRow) encode(e *fieldEnc) {
	e.row(8)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.int2(r.typ)
	e.timestamptz(r.ts)
	e.int2(r.hashScheme)
	e.int2(r.sigScheme)
	e.bytea(r.signer)
	e.bytea(r.raw)
}

// encodeStored appends r as a row of the messages table, not deleted.
func (r *messageRow) encodeStored(e *fieldEnc) {
	e.row(11)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.int2(r.typ)
	e.timestamptz(r.ts)
	e.int2(r.hashScheme)
	e.int2(r.sigScheme)
	e.bytea(r.signer)
	e.bytea(r.raw)
	e.null()
	e.null()
	e.null()
}

type markRow struct {
	hash []byte
	kind int16
	// table is the store table of the marked message's type (tableNone
	// when it has none), so marks are applied only where they can match.
	table int16
}

func (r *markRow) encode(e *fieldEnc) {
	e.row(3)
	e.bytea(r.hash)
	e.int2(r.kind)
	e.int2(r.table)
}

type castRow struct {
	hash       []byte
	fid        int64
	ts         time.Time
	parentFid  pgtype.Int8
	parentHash []byte
	parentURL  pgtype.Text
	text       string
	embeds     []byte
	mentions   []byte
	positions  []byte
	typ        int16
	// The thread root, when this batch holds the reply's chain up to it;
	// otherwise top is the first ancestor outside the batch, whose root
	// the merge looks up. Both are unset on root casts and broken chains.
	rootFid  int64
	rootHash []byte
	rootURL  pgtype.Text
	top      []byte
}

func (r *castRow) encode(e *fieldEnc) {
	e.row(15)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.optInt8(r.parentFid)
	e.bytea(r.parentHash)
	e.optText(r.parentURL)
	e.text(r.text)
	e.bytea(r.embeds)
	e.bytea(r.mentions)
	e.bytea(r.positions)
	e.int2(r.typ)
	if r.rootHash != nil {
		e.int8(r.rootFid)
	} else {
		e.null()
	}
	e.bytea(r.rootHash)
	e.optText(r.rootURL)
	e.bytea(r.top)
}

// encodeStored appends r as a row of the casts table, not deleted.
func (r *castRow) encodeStored(e *fieldEnc) {
	e.row(14)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.optInt8(r.parentFid)
	e.bytea(r.parentHash)
	e.optText(r.parentURL)
	e.text(r.text)
	e.jsonb(r.embeds)
	e.jsonb(r.mentions)
	e.jsonb(r.positions)
	e.int2(r.typ)
	if r.parentHash == nil {
		e.null()
		e.null()
		e.optText(r.parentURL)
		return
	}
	e.int8(r.rootFid)
	e.bytea(r.rootHash)
	e.optText(r.rootURL)
}

// castIsNew reports whether c goes to Writer.copyDirect: the batch neither
// marks nor removes it, and its thread root is known without a lookup.
func (b *rows) castIsNew(c *castRow) bool {
	return !b.gone.has(c.hash) && (c.parentHash == nil || c.rootHash != nil)
}

// embeddingRow is a cast's vector on its way to cast_embedding_queue.
type embeddingRow struct {
	hash []byte
	fid  int64
	vec  []float32
}

func (r *embeddingRow) encode(e *fieldEnc) {
	e.row(3)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.vector(r.vec)
}

type castRemoveRow struct {
	hash   []byte
	fid    int64
	ts     time.Time
	target []byte
}

func (r *castRemoveRow) encode(e *fieldEnc) {
	e.row(4)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.bytea(r.target)
}

type reactionRow struct {
	hash       []byte
	fid        int64
	ts         time.Time
	remove     bool
	typ        int16
	targetFid  pgtype.Int8
	targetHash []byte
	targetURL  pgtype.Text
}

func (r *reactionRow) encode(e *fieldEnc) {
	e.row(8)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.bool(r.remove)
	e.int2(r.typ)
	e.optInt8(r.targetFid)
	e.bytea(r.targetHash)
	e.optText(r.targetURL)
}

type linkRow struct {
	hash      []byte
	fid       int64
	ts        time.Time
	remove    bool
	typ       string
	targetFid int64
	displayTS pgtype.Timestamptz
}

func (r *linkRow) encode(e *fieldEnc) {
	e.row(7)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.bool(r.remove)
	e.text(r.typ)
	e.int8(r.targetFid)
	e.optTimestamptz(r.displayTS)
}

type compactRow struct {
	hash    []byte
	fid     int64
	ts      time.Time
	typ     string
	targets []byte // an int8[] literal
}

func (r *compactRow) encode(e *fieldEnc) {
	e.row(5)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.text(r.typ)
	e.bytea(r.targets)
}

type verificationRow struct {
	hash      []byte
	fid       int64
	ts        time.Time
	remove    bool
	address   []byte
	blockHash []byte
	signature []byte
	protocol  int16
	vtype     int16
	chainID   int64
}

func (r *verificationRow) encode(e *fieldEnc) {
	e.row(10)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.bool(r.remove)
	e.bytea(r.address)
	e.bytea(r.blockHash)
	e.bytea(r.signature)
	e.int2(r.protocol)
	e.int2(r.vtype)
	e.int8(r.chainID)
}

type userDataRow struct {
	hash  []byte
	fid   int64
	ts    time.Time
	typ   int16
	value string
}

func (r *userDataRow) encode(e *fieldEnc) {
	e.row(5)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.int2(r.typ)
	e.text(r.value)
}

type proofRow struct {
	username  string
	fid       int64
	ts        time.Time
	typ       int16
	owner     []byte
	signature []byte
	// deletion is a proof for fid 0, which deletes the name; marked is a
	// proof the node deleted for good.
	deletion bool
	marked   bool
}

func (r *proofRow) encode(e *fieldEnc) {
	e.row(8)
	e.text(r.username)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.int2(r.typ)
	e.bytea(r.owner)
	e.bytea(r.signature)
	e.bool(r.deletion)
	e.bool(r.marked)
}

type lendRow struct {
	hash     []byte
	fid      int64
	ts       time.Time
	toFid    int64
	numUnits int64
	unitType int16
}

func (r *lendRow) encode(e *fieldEnc) {
	e.row(6)
	e.bytea(r.hash)
	e.int8(r.fid)
	e.timestamptz(r.ts)
	e.int8(r.toFid)
	e.int8(r.numUnits)
	e.int2(r.unitType)
}

// onchainRow is one on-chain event with the columns of every typed table;
// the merge picks the ones its type uses.
type onchainRow struct {
	typ          int16
	chainID      int64
	blockNumber  int64
	blockHash    []byte
	blockTS      time.Time
	txHash       []byte
	logIndex     int32
	txIndex      int32
	fid          int64
	version      int32
	raw          []byte
	key          []byte
	keyType      int16
	eventType    int16
	metadata     []byte
	metadataType int16
	migratedAt   int64
	toAddr       []byte
	fromAddr     []byte
	recoveryAddr []byte
	payer        []byte
	units        int64
	expiry       int64
	tierType     int16
	forDays      int64
}

func (r *onchainRow) encode(e *fieldEnc) {
	e.row(25)
	e.int2(r.typ)
	e.int8(r.chainID)
	e.int8(r.blockNumber)
	e.bytea(r.blockHash)
	e.timestamptz(r.blockTS)
	e.bytea(r.txHash)
	e.int4(r.logIndex)
	e.int4(r.txIndex)
	e.int8(r.fid)
	e.int4(r.version)
	e.bytea(r.raw)
	e.bytea(r.key)
	e.int2(r.keyType)
	e.int2(r.eventType)
	e.bytea(r.metadata)
	e.int2(r.metadataType)
	e.int8(r.migratedAt)
	e.bytea(r.toAddr)
	e.bytea(r.fromAddr)
	e.bytea(r.recoveryAddr)
	e.bytea(r.payer)
	e.int8(r.units)
	e.int8(r.expiry)
	e.int2(r.tierType)
	e.int8(r.forDays)
}

type deadLetterRow struct {
	source  string
	reason  string
	detail  string
	shard   int32
	eventID pgtype.Int8
	hash    []byte
	raw     []byte
}

func (r *deadLetterRow) encode(e *fieldEnc) {
	e.row(7)
	e.text(r.source)
	e.text(r.reason)
	e.text(r.detail)
	e.int4(r.shard)
	e.optInt8(r.eventID)
	e.bytea(r.hash)
	e.bytea(r.raw)
}

// rows is the staged form of one batch. It is reused across batches: every
// slice is truncated, not freed, so a steady stream allocates little.
type rows struct {
	writeMessages bool

	messages      []messageRow
	marks         []markRow
	casts         []castRow
	embeddings    []embeddingRow
	castRemoves   []castRemoveRow
	reactions     []reactionRow
	links         []linkRow
	compacts      []compactRow
	verifications []verificationRow
	userData      []userDataRow
	proofs        []proofRow
	lends         []lendRow
	onchain       []onchainRow
	dead          []deadLetterRow

	// arena holds encoded messages and JSON columns; rows slice into it.
	arena []byte
	// seen holds the hashes of the messages staged (seenStaged), so that a
	// message delivered twice in one batch is stored once and the merges
	// need not deduplicate.
	seen hashSet
	// gone holds hashes this batch removes or marks, so their casts are not
	// embedded.
	gone hashSet
	// markedHashes holds the hashes this batch marks.
	markedHashes hashSet
	// marked has bit t set when a mark targets store table t.
	marked uint32
	// copiedMessages and copiedCasts count the rows Writer.copyDirect
	// stored, which the merge then leaves out; -1 when its COPY failed.
	copiedMessages, copiedCasts int
	// castAt indexes casts by hash, and rootState tracks resolveRoots.
	castAt    map[[20]byte]int32
	rootState []uint8
	rootPath  []int32
	// vectors backs cast embeddings.
	vectors []float32
	// enc encodes COPY bodies; srcEnc the sources' arrays, which arrays
	// holds once encoded.
	enc    fieldEnc
	srcEnc [numSources]fieldEnc
	arrays [numSources][][]byte
	params [][]byte
	stmts  []*mergeStmt

	skipped int
}

func (b *rows) reset() {
	b.messages = b.messages[:0]
	b.marks = b.marks[:0]
	b.casts = b.casts[:0]
	b.embeddings = b.embeddings[:0]
	b.castRemoves = b.castRemoves[:0]
	b.reactions = b.reactions[:0]
	b.links = b.links[:0]
	b.compacts = b.compacts[:0]
	b.verifications = b.verifications[:0]
	b.userData = b.userData[:0]
	b.proofs = b.proofs[:0]
	b.lends = b.lends[:0]
	b.onchain = b.onchain[:0]
	b.dead = b.dead[:0]
	b.arena = b.arena[:0]
	b.seen.reset()
	b.gone.reset()
	b.markedHashes.reset()
	b.marked = 0
	b.copiedMessages, b.copiedCasts = 0, 0
	b.skipped = 0
}

// hashSet maps message hashes to flag bits. Farcaster hashes are 20 bytes
// and kept as arrays, which costs no allocation per entry; other lengths,
// only seen in bad input, fall back to strings.
type hashSet struct {
	short map[[20]byte]uint8
	long  map[string]uint8
}

func (s *hashSet) reset() {
	clear(s.short)
	clear(s.long)
}

// add sets flags f on h.
func (s *hashSet) add(h []byte, f uint8) {
	if len(h) == 20 {
		if s.short == nil {
			s.short = make(map[[20]byte]uint8)
		}
		s.short[[20]byte(h)] |= f
		return
	}
	if s.long == nil {
		s.long = make(map[string]uint8)
	}
	s.long[string(h)] |= f
}

// get returns the flags set on h.
func (s *hashSet) get(h []byte) uint8 {
	if len(h) == 20 {
		return s.short[[20]byte(h)]
	}
	return s.long[string(h)]
}

func (s *hashSet) has(h []byte) bool { return s.get(h) != 0 }

// Flags of rows.seen.
const (
	seenStaged uint8 = 1 << iota
	// seenMerged: the batch merges the message itself, rather than only
	// carrying it as one a merge deleted, a prune or a revoke.
	seenMerged
)

// messageIsNew reports whether m goes to Writer.copyDirect: the batch does
// not mark it, or it merges m itself (an add that a later event of the batch
// removes). A message the batch only marks usually is stored already.
func (b *rows) messageIsNew(m *messageRow) bool {
	return !b.markedHashes.has(m.hash) || b.seen.get(m.hash)&seenMerged != 0
}

// add stages one event.
func (b *rows) add(ev *pb.HubEvent) {
	if ev == nil {
		b.deadLetter(nil, "event", "missing_event", "nil event", nil, nil)
		return
	}
	switch body := ev.Body.(type) {
	case *pb.HubEvent_MergeMessageBody:
		if body.MergeMessageBody == nil {
			b.deadLetterEvent(ev, "missing_body", "merge message event without body")
			return
		}
		b.addMessage(ev, body.MergeMessageBody.Message, 0)
		for _, d := range body.MergeMessageBody.DeletedMessages {
			b.addMessage(ev, d, markDeleted)
		}
	case *pb.HubEvent_PruneMessageBody:
		b.addMessage(ev, body.PruneMessageBody.GetMessage(), markPruned)
	case *pb.HubEvent_RevokeMessageBody:
		b.addMessage(ev, body.RevokeMessageBody.GetMessage(), markRevoked)
	case *pb.HubEvent_MergeUsernameProofBody:
		p := body.MergeUsernameProofBody
		if p == nil {
			b.deadLetterEvent(ev, "missing_body", "merge username proof event without body")
			return
		}
		if p.UsernameProof != nil {
			b.addProof(ev, p.UsernameProof, false)
		}
		if p.DeletedUsernameProof != nil {
			b.addProof(ev, p.DeletedUsernameProof, true)
		}
		if p.UsernameProofMessage != nil {
			b.addMessage(ev, p.UsernameProofMessage, 0)
		}
		if p.DeletedUsernameProofMessage != nil {
			b.addMessage(ev, p.DeletedUsernameProofMessage, markDeleted)
		}
	case *pb.HubEvent_MergeOnChainEventBody:
		b.addOnchain(ev, body.MergeOnChainEventBody.GetOnChainEvent())
	default:
		// Block confirmations, merge failures and unknown kinds carry no state.
		b.skipped++
	}
}

func (b *rows) deadLetterEvent(ev *pb.HubEvent, reason, detail string) {
	raw, _ := proto.Marshal(ev)
	b.deadLetter(ev, "event", reason, detail, nil, raw)
}

func (b *rows) deadLetter(ev *pb.HubEvent, source, reason, detail string, hash, raw []byte) {
	r := deadLetterRow{source: source, reason: reason, detail: cleanText(detail), hash: hash, raw: raw}
	if ev != nil {
		r.shard = int32(ev.ShardIndex)
		r.eventID = pgtype.Int8{Int64: int64(ev.Id), Valid: true}
	}
	b.dead = append(b.dead, r)
}

func (b *rows) deadLetterMessage(ev *pb.HubEvent, m *pb.Message, reason, detail string) {
	raw, _ := appendMessage(nil, m)
	b.deadLetter(ev, "message", reason, detail, m.GetHash(), raw)
}

// appendMessage appends the wire encoding of m. Go's encoder refuses
// invalid UTF-8 in decoded string fields, which the hash-covered data_bytes
// may hold; then the envelope is written with data_bytes alone, which loses
// nothing since data is their decoding.
func appendMessage(dst []byte, m *pb.Message) ([]byte, error) {
	out, err := proto.MarshalOptions{}.MarshalAppend(dst, m)
	if err == nil || m.DataBytes == nil {
		return out, err
	}
	env := &pb.Message{Hash: m.Hash, HashScheme: m.HashScheme, Signature: m.Signature,
		SignatureScheme: m.SignatureScheme, Signer: m.Signer, DataBytes: m.DataBytes}
	return proto.MarshalOptions{}.MarshalAppend(dst[:len(dst):len(dst)], env)
}

// messageData returns m's data, decoding data_bytes when only they are set.
func messageData(m *pb.Message) (*pb.MessageData, error) {
	if m.Data != nil {
		return m.Data, nil
	}
	if len(m.DataBytes) == 0 {
		return nil, fmt.Errorf("message has neither data nor data_bytes")
	}
	d := new(pb.MessageData)
	if err := proto.Unmarshal(m.DataBytes, d); err != nil {
		return nil, fmt.Errorf("decode data_bytes: %w", err)
	}
	return d, nil
}

func (b *rows) addMessage(ev *pb.HubEvent, m *pb.Message, mark int16) {
	if m == nil {
		b.deadLetterEvent(ev, "missing_message", "event carries no message")
		return
	}
	if len(m.Hash) == 0 || len(m.Hash) > maxKeyBytes {
		b.deadLetterMessage(ev, m, "bad_hash", fmt.Sprintf("message hash has %d bytes", len(m.Hash)))
		return
	}
	d, err := messageData(m)
	if err != nil {
		b.deadLetterMessage(ev, m, string(message.ReasonNoData), err.Error())
		return
	}
	if d.Fid > 1<<63-1 {
		b.deadLetterMessage(ev, m, "bad_fid", fmt.Sprintf("fid %d out of range", d.Fid))
		return
	}
	flags := seenStaged
	if mark == 0 {
		flags |= seenMerged
	}
	if b.seen.has(m.Hash) {
		// Delivered again in this batch: the rows are staged already. Only
		// a proof's row depends on the mark, and a new mark must be kept.
		b.seen.add(m.Hash, flags)
		if d.Type == pb.MessageType_MESSAGE_TYPE_USERNAME_PROOF && mark != 0 {
			if body := d.GetUsernameProofBody(); body != nil {
				if reason, _ := b.checkProof(body); reason == "" {
					b.appendProof(body, true)
				}
			}
		}
		b.addMark(m.Hash, d.Type, mark)
		return
	}
	start := len(b.arena)
	if b.writeMessages {
		arena, err := appendMessage(b.arena, m)
		if err != nil {
			b.deadLetterMessage(ev, m, string(message.ReasonEncode), err.Error())
			return
		}
		b.arena = arena
	}
	end := len(b.arena)
	if reason, detail := b.addTyped(m, d, mark); reason != "" {
		b.arena = b.arena[:start]
		b.deadLetterMessage(ev, m, reason, detail)
		return
	}
	b.seen.add(m.Hash, flags)
	b.addMark(m.Hash, d.Type, mark)
	if !b.writeMessages {
		return
	}
	b.messages = append(b.messages, messageRow{
		hash:       m.Hash,
		fid:        int64(d.Fid),
		typ:        int16(d.Type),
		ts:         message.Time(d.Timestamp),
		hashScheme: int16(m.HashScheme),
		sigScheme:  int16(m.SignatureScheme),
		signer:     nonNil(m.Signer),
		raw:        b.arena[start:end:end],
	})
}

func (b *rows) addMark(h []byte, t pb.MessageType, mark int16) {
	if mark == 0 {
		return
	}
	table := storeTable(t)
	b.marks = append(b.marks, markRow{hash: h, kind: mark, table: table})
	b.marked |= 1 << table
	b.gone.add(h, 1)
	b.markedHashes.add(h, 1)
}

// addTyped stages the store row of a message and returns a dead-letter
// reason when its body does not fit its type.
func (b *rows) addTyped(m *pb.Message, d *pb.MessageData, mark int16) (reason, detail string) {
	fid := int64(d.Fid)
	ts := message.Time(d.Timestamp)
	mismatch := func() (string, string) {
		return "body_mismatch", fmt.Sprintf("%v message without its body", d.Type)
	}
	switch d.Type {
	case pb.MessageType_MESSAGE_TYPE_CAST_ADD:
		body := d.GetCastAddBody()
		if body == nil {
			return mismatch()
		}
		b.addCast(m.Hash, fid, ts, body)
	case pb.MessageType_MESSAGE_TYPE_CAST_REMOVE:
		body := d.GetCastRemoveBody()
		if body == nil || len(body.TargetHash) == 0 || len(body.TargetHash) > maxKeyBytes {
			return "bad_target", "cast remove without a usable target hash"
		}
		b.castRemoves = append(b.castRemoves, castRemoveRow{hash: m.Hash, fid: fid, ts: ts, target: body.TargetHash})
		b.gone.add(body.TargetHash, 1)
	case pb.MessageType_MESSAGE_TYPE_REACTION_ADD, pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE:
		body := d.GetReactionBody()
		if body == nil {
			return mismatch()
		}
		r := reactionRow{hash: m.Hash, fid: fid, ts: ts, remove: d.Type == pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE, typ: int16(body.Type)}
		switch t := body.Target.(type) {
		case *pb.ReactionBody_TargetCastId:
			if t.TargetCastId == nil || len(t.TargetCastId.Hash) == 0 || len(t.TargetCastId.Hash) > maxKeyBytes {
				return "bad_target", "reaction target cast id without a usable hash"
			}
			r.targetFid = pgtype.Int8{Int64: int64(t.TargetCastId.Fid), Valid: true}
			r.targetHash = t.TargetCastId.Hash
		case *pb.ReactionBody_TargetUrl:
			u := cleanText(t.TargetUrl)
			if len(u) > maxKeyBytes {
				return "field_too_long", fmt.Sprintf("reaction target url has %d bytes", len(u))
			}
			r.targetURL = pgtype.Text{String: u, Valid: true}
		default:
			return "bad_target", "reaction without a target"
		}
		b.reactions = append(b.reactions, r)
	case pb.MessageType_MESSAGE_TYPE_LINK_ADD, pb.MessageType_MESSAGE_TYPE_LINK_REMOVE:
		body := d.GetLinkBody()
		if body == nil {
			return mismatch()
		}
		t, ok := body.Target.(*pb.LinkBody_TargetFid)
		if !ok {
			return "bad_target", "link without a target fid"
		}
		typ := cleanText(body.Type)
		if len(typ) > maxKeyBytes {
			return "field_too_long", fmt.Sprintf("link type has %d bytes", len(typ))
		}
		r := linkRow{hash: m.Hash, fid: fid, ts: ts, remove: d.Type == pb.MessageType_MESSAGE_TYPE_LINK_REMOVE, typ: typ, targetFid: int64(t.TargetFid)}
		if body.DisplayTimestamp != nil {
			r.displayTS = pgtype.Timestamptz{Time: message.Time(*body.DisplayTimestamp), Valid: true}
		}
		b.links = append(b.links, r)
	case pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE:
		body := d.GetLinkCompactStateBody()
		if body == nil {
			return mismatch()
		}
		typ := cleanText(body.Type)
		if len(typ) > maxKeyBytes {
			return "field_too_long", fmt.Sprintf("link type has %d bytes", len(typ))
		}
		start := len(b.arena)
		a := append(b.arena, '{')
		for i, f := range body.TargetFids {
			if i > 0 {
				a = append(a, ',')
			}
			a = appendUint(a, f)
		}
		b.arena = append(a, '}')
		b.compacts = append(b.compacts, compactRow{hash: m.Hash, fid: fid, ts: ts, typ: typ, targets: b.arena[start:len(b.arena):len(b.arena)]})
	case pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS:
		body := d.GetVerificationAddAddressBody()
		if body == nil {
			return mismatch()
		}
		if len(body.Address) == 0 || len(body.Address) > maxKeyBytes {
			return "bad_address", fmt.Sprintf("verification address has %d bytes", len(body.Address))
		}
		b.verifications = append(b.verifications, verificationRow{
			hash: m.Hash, fid: fid, ts: ts, address: body.Address,
			blockHash: nonNil(body.BlockHash), signature: nonNil(body.ClaimSignature),
			protocol: int16(body.Protocol), vtype: int16(body.VerificationType), chainID: int64(body.ChainId),
		})
	case pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE:
		body := d.GetVerificationRemoveBody()
		if body == nil {
			return mismatch()
		}
		if len(body.Address) == 0 || len(body.Address) > maxKeyBytes {
			return "bad_address", fmt.Sprintf("verification address has %d bytes", len(body.Address))
		}
		b.verifications = append(b.verifications, verificationRow{hash: m.Hash, fid: fid, ts: ts, remove: true, address: body.Address, protocol: int16(body.Protocol)})
	case pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD:
		body := d.GetUserDataBody()
		if body == nil {
			return mismatch()
		}
		b.userData = append(b.userData, userDataRow{hash: m.Hash, fid: fid, ts: ts, typ: int16(body.Type), value: cleanText(body.Value)})
	case pb.MessageType_MESSAGE_TYPE_USERNAME_PROOF:
		body := d.GetUsernameProofBody()
		if body == nil {
			return mismatch()
		}
		if reason, detail := b.checkProof(body); reason != "" {
			return reason, detail
		}
		// A proof message that is pruned, revoked or superseded no longer
		// holds its name, for good.
		b.appendProof(body, mark != 0)
	case pb.MessageType_MESSAGE_TYPE_LEND_STORAGE:
		body := d.GetLendStorageBody()
		if body == nil {
			return mismatch()
		}
		if body.ToFid > 1<<63-1 || body.NumUnits > 1<<63-1 {
			return "bad_value", "lend storage fid or units out of range"
		}
		b.lends = append(b.lends, lendRow{hash: m.Hash, fid: fid, ts: ts, toFid: int64(body.ToFid), numUnits: int64(body.NumUnits), unitType: int16(body.UnitType)})
	default:
		// Frame actions, key messages and newer types are kept in messages only.
	}
	return "", ""
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (b *rows) addCast(hash []byte, fid int64, ts time.Time, body *pb.CastAddBody) {
	r := castRow{hash: hash, fid: fid, ts: ts, text: cleanText(body.Text), typ: int16(body.Type)}
	switch p := body.Parent.(type) {
	case *pb.CastAddBody_ParentCastId:
		if p.ParentCastId != nil && len(p.ParentCastId.Hash) > 0 {
			r.parentFid = pgtype.Int8{Int64: int64(p.ParentCastId.Fid), Valid: true}
			r.parentHash = p.ParentCastId.Hash
		}
	case *pb.CastAddBody_ParentUrl:
		r.parentURL = pgtype.Text{String: cleanText(p.ParentUrl), Valid: true}
	}
	start := len(b.arena)
	a := append(b.arena, '[')
	n := 0
	for _, e := range body.Embeds {
		switch x := e.GetEmbed().(type) {
		case *pb.Embed_Url:
			if n > 0 {
				a = append(a, ',')
			}
			a = append(a, `{"url":`...)
			a = appendJSONString(a, cleanText(x.Url))
			a = append(a, '}')
			n++
		case *pb.Embed_CastId:
			if x.CastId == nil {
				continue
			}
			if n > 0 {
				a = append(a, ',')
			}
			a = append(a, `{"cast_id":{"fid":`...)
			a = appendUint(a, x.CastId.Fid)
			a = append(a, `,"hash":"`...)
			a = appendHex(a, x.CastId.Hash)
			a = append(a, `"}}`...)
			n++
		}
	}
	if len(body.Embeds) == 0 {
		for _, u := range body.EmbedsDeprecated {
			if n > 0 {
				a = append(a, ',')
			}
			a = append(a, `{"url":`...)
			a = appendJSONString(a, cleanText(u))
			a = append(a, '}')
			n++
		}
	}
	a = append(a, ']')
	mid := len(a)
	a = append(a, '[')
	for i, f := range body.Mentions {
		if i > 0 {
			a = append(a, ',')
		}
		a = appendUint(a, f)
	}
	a = append(a, ']')
	end := len(a)
	a = append(a, '[')
	for i, p := range body.MentionsPositions {
		if i > 0 {
			a = append(a, ',')
		}
		a = appendUint(a, uint64(p))
	}
	a = append(a, ']')
	b.arena = a
	r.embeds = a[start:mid:mid]
	r.mentions = a[mid:end:end]
	r.positions = a[end:len(a):len(a)]
	b.casts = append(b.casts, r)
}

func (b *rows) checkProof(p *pb.UserNameProof) (reason, detail string) {
	if len(p.Name) == 0 || len(p.Name) > maxKeyBytes {
		return "bad_name", fmt.Sprintf("username proof name has %d bytes", len(p.Name))
	}
	if p.Timestamp > maxUnixSeconds {
		return "bad_timestamp", fmt.Sprintf("username proof timestamp %d out of range", p.Timestamp)
	}
	if p.Fid > 1<<63-1 {
		return "bad_fid", fmt.Sprintf("fid %d out of range", p.Fid)
	}
	return "", ""
}

func (b *rows) appendProof(p *pb.UserNameProof, marked bool) {
	b.proofs = append(b.proofs, proofRow{
		username:  cleanBytesText(p.Name),
		fid:       int64(p.Fid),
		ts:        time.Unix(int64(p.Timestamp), 0).UTC(),
		typ:       int16(p.Type),
		owner:     p.Owner,
		signature: nonNil(p.Signature),
		deletion:  p.Fid == 0,
		marked:    marked,
	})
}

func (b *rows) addProof(ev *pb.HubEvent, p *pb.UserNameProof, marked bool) {
	if reason, detail := b.checkProof(p); reason != "" {
		raw, _ := proto.Marshal(p)
		b.deadLetter(ev, "username_proof", reason, detail, nil, raw)
		return
	}
	b.appendProof(p, marked)
}

func (b *rows) addOnchain(ev *pb.HubEvent, e *pb.OnChainEvent) {
	if e == nil {
		b.deadLetterEvent(ev, "missing_body", "on-chain event without body")
		return
	}
	raw, _ := proto.Marshal(e)
	fail := func(reason, detail string) { b.deadLetter(ev, "onchain_event", reason, detail, e.TransactionHash, raw) }
	if len(e.TransactionHash) == 0 || len(e.TransactionHash) > maxKeyBytes {
		fail("bad_tx_hash", fmt.Sprintf("transaction hash has %d bytes", len(e.TransactionHash)))
		return
	}
	if e.BlockTimestamp > maxUnixSeconds || e.Fid > 1<<63-1 {
		fail("bad_value", "block timestamp or fid out of range")
		return
	}
	r := onchainRow{
		typ: int16(e.Type), chainID: int64(e.ChainId), blockNumber: int64(e.BlockNumber), blockHash: nonNil(e.BlockHash),
		blockTS: time.Unix(int64(e.BlockTimestamp), 0).UTC(), txHash: e.TransactionHash, logIndex: int32(e.LogIndex),
		txIndex: int32(e.TxIndex), fid: int64(e.Fid), version: int32(e.Version), raw: raw,
	}
	switch body := e.Body.(type) {
	case *pb.OnChainEvent_SignerEventBody:
		s := body.SignerEventBody
		if s == nil || len(s.Key) > maxKeyBytes {
			fail("bad_body", "signer event without a usable key")
			return
		}
		r.key, r.keyType, r.eventType, r.metadata, r.metadataType = nonNil(s.Key), int16(s.KeyType), int16(s.EventType), s.Metadata, int16(s.MetadataType)
	case *pb.OnChainEvent_SignerMigratedEventBody:
		r.migratedAt = int64(body.SignerMigratedEventBody.GetMigratedAt())
	case *pb.OnChainEvent_IdRegisterEventBody:
		s := body.IdRegisterEventBody
		if s == nil || len(s.To) > maxKeyBytes {
			fail("bad_body", "id register event without a usable address")
			return
		}
		r.toAddr, r.eventType, r.fromAddr, r.recoveryAddr = nonNil(s.To), int16(s.EventType), s.From, s.RecoveryAddress
	case *pb.OnChainEvent_StorageRentEventBody:
		s := body.StorageRentEventBody
		if s == nil {
			fail("bad_body", "storage rent event without body")
			return
		}
		r.payer, r.units, r.expiry = nonNil(s.Payer), int64(s.Units), int64(s.Expiry)
	case *pb.OnChainEvent_TierPurchaseEventBody:
		s := body.TierPurchaseEventBody
		if s == nil || s.ForDays > 1<<31 {
			fail("bad_body", "tier purchase without a usable duration")
			return
		}
		r.tierType, r.forDays, r.payer = int16(s.TierType), int64(s.ForDays), nonNil(s.Payer)
	}
	b.onchain = append(b.onchain, r)
}

// encodeSource encodes the batch's rows of s as its column arrays.
func (b *rows) encodeSource(s *source) {
	e := &b.srcEnc[s.id]
	e.begin(true, len(s.cols))
	switch s.id {
	case idMarks:
		encodeAll(e, b.marks)
	case idMessages:
		// After copyDirect only the ones it left out are to merge.
		for i := range b.messages {
			if m := &b.messages[i]; b.copiedMessages <= 0 || !b.messageIsNew(m) {
				m.encode(e)
			}
		}
	case idMessageHashes:
		// The messages copyDirect stored.
		for i := range b.messages {
			if m := &b.messages[i]; b.messageIsNew(m) {
				e.row(1)
				e.bytea(m.hash)
			}
		}
	case idCasts:
		for i := range b.casts {
			if c := &b.casts[i]; b.copiedCasts <= 0 || !b.castIsNew(c) {
				c.encode(e)
			}
		}
	case idCopiedCasts:
		for i := range b.casts {
			if c := &b.casts[i]; b.castIsNew(c) {
				e.row(1)
				e.bytea(c.hash)
			}
		}
	case idCastHashes:
		for i := range b.casts {
			e.row(1)
			e.bytea(b.casts[i].hash)
		}
	case idCastRemoves:
		encodeAll(e, b.castRemoves)
	case idReactions:
		encodeAll(e, b.reactions)
	case idLinks:
		encodeAll(e, b.links)
	case idCompacts:
		encodeAll(e, b.compacts)
	case idVerifications:
		encodeAll(e, b.verifications)
	case idUserData:
		encodeAll(e, b.userData)
	case idProofs:
		encodeAll(e, b.proofs)
	case idLends:
		encodeAll(e, b.lends)
	case idOnchain:
		encodeAll(e, b.onchain)
	}
	b.arrays[s.id] = e.arrays(s.oids)
}

func encodeAll[T any, P encoder[T]](e *fieldEnc, rs []T) {
	for i := range rs {
		P(&rs[i]).encode(e)
	}
}

const (
	rootPending uint8 = iota
	rootVisiting
	rootDone
)

// resolveRoots finds the thread root of each reply whose chain of parents
// this batch holds up to a root cast; a chain leaving the batch records its
// first outside ancestor (top) for the merge to look up. Replies in one
// batch then need no recursive query, and each is written once.
func (b *rows) resolveRoots() {
	n := len(b.casts)
	if n == 0 {
		return
	}
	if b.castAt == nil {
		b.castAt = make(map[[20]byte]int32, n)
	}
	clear(b.castAt)
	for i := range b.casts {
		if h := b.casts[i].hash; len(h) == 20 {
			b.castAt[[20]byte(h)] = int32(i)
		}
	}
	if cap(b.rootState) < n {
		b.rootState = make([]uint8, n)
	}
	b.rootState = b.rootState[:n]
	clear(b.rootState)
	for i := range b.casts {
		b.resolveRoot(int32(i))
	}
}

func (b *rows) parentIndex(c *castRow) (int32, bool) {
	if len(c.parentHash) != 20 {
		return 0, false
	}
	p, ok := b.castAt[[20]byte(c.parentHash)]
	return p, ok
}

func (b *rows) resolveRoot(i int32) {
	path := b.rootPath[:0]
	j := i
	cycle := false
walk:
	for {
		c := &b.casts[j]
		switch b.rootState[j] {
		case rootDone:
			break walk
		case rootVisiting:
			// Hashes are not checked in every validation mode, so a
			// hostile batch can make parents loop.
			cycle = true
			break walk
		}
		if c.parentHash == nil {
			b.rootState[j] = rootDone
			break
		}
		p, ok := b.parentIndex(c)
		if !ok {
			c.top = c.parentHash
			b.rootState[j] = rootDone
			break
		}
		b.rootState[j] = rootVisiting
		path = append(path, j)
		j = p
	}
	for k := len(path) - 1; k >= 0; k-- {
		c := &b.casts[path[k]]
		b.rootState[path[k]] = rootDone
		if cycle {
			continue
		}
		p, _ := b.parentIndex(c)
		par := &b.casts[p]
		if par.parentHash == nil {
			c.rootFid, c.rootHash, c.rootURL = par.fid, par.hash, par.parentURL
		} else {
			c.rootFid, c.rootHash, c.rootURL, c.top = par.rootFid, par.rootHash, par.rootURL, par.top
		}
	}
	b.rootPath = path
}
