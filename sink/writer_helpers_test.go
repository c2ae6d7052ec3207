package sink

import (
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/waypointhq/waypoint/internal/testsupport"
	"github.com/waypointhq/waypoint/message"
	"github.com/waypointhq/waypoint/migrations"
	pb "github.com/waypointhq/waypoint/proto"
)

// migratedPool returns a pool on a fresh, migrated test database.
func migratedPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pool, err := pgxpool.New(ctx, testsupport.PostgresURL(t))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(pool.Close)
	if err := migrations.Up(ctx, pool); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return pool
}

func newTestWriter(t testing.TB, pool *pgxpool.Pool, opts ...WriterOption) *Writer {
	t.Helper()
	w, err := NewWriter(context.Background(), pool, opts...)
	if err != nil {
		t.Fatalf("new writer: %v", err)
	}
	return w
}

func testKey(seed byte) ed25519.PrivateKey {
	var s [32]byte
	s[0] = seed
	s[31] = 0x5a
	return ed25519.NewKeyFromSeed(s[:])
}

var defaultKey = testKey(1)

// sign builds a signed message; it fails the test on an encoding error.
func sign(t testing.TB, d *pb.MessageData) *pb.Message {
	t.Helper()
	if d.Network == 0 {
		d.Network = pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET
	}
	m, err := message.Sign(d, defaultKey)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return m
}

func castAdd(t testing.TB, fid uint64, ts uint32, text string, parent *pb.CastId) *pb.Message {
	body := &pb.CastAddBody{Text: text}
	if parent != nil {
		body.Parent = &pb.CastAddBody_ParentCastId{ParentCastId: parent}
	}
	return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_ADD, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_CastAddBody{CastAddBody: body}})
}

func castRemove(t testing.TB, fid uint64, ts uint32, target []byte) *pb.Message {
	return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_CAST_REMOVE, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_CastRemoveBody{CastRemoveBody: &pb.CastRemoveBody{TargetHash: target}}})
}

func reaction(t testing.TB, remove bool, fid uint64, ts uint32, typ pb.ReactionType, target *pb.CastId, url string) *pb.Message {
	body := &pb.ReactionBody{Type: typ}
	if target != nil {
		body.Target = &pb.ReactionBody_TargetCastId{TargetCastId: target}
	} else {
		body.Target = &pb.ReactionBody_TargetUrl{TargetUrl: url}
	}
	mt := pb.MessageType_MESSAGE_TYPE_REACTION_ADD
	if remove {
		mt = pb.MessageType_MESSAGE_TYPE_REACTION_REMOVE
	}
	return sign(t, &pb.MessageData{Type: mt, Fid: fid, Timestamp: ts, Body: &pb.MessageData_ReactionBody{ReactionBody: body}})
}

func link(t testing.TB, remove bool, fid uint64, ts uint32, typ string, target uint64) *pb.Message {
	mt := pb.MessageType_MESSAGE_TYPE_LINK_ADD
	if remove {
		mt = pb.MessageType_MESSAGE_TYPE_LINK_REMOVE
	}
	return sign(t, &pb.MessageData{Type: mt, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_LinkBody{LinkBody: &pb.LinkBody{Type: typ, Target: &pb.LinkBody_TargetFid{TargetFid: target}}}})
}

func linkCompact(t testing.TB, fid uint64, ts uint32, typ string, targets []uint64) *pb.Message {
	return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_LINK_COMPACT_STATE, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_LinkCompactStateBody{LinkCompactStateBody: &pb.LinkCompactStateBody{Type: typ, TargetFids: targets}}})
}

func verification(t testing.TB, remove bool, fid uint64, ts uint32, addr []byte) *pb.Message {
	if remove {
		return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_VERIFICATION_REMOVE, Fid: fid, Timestamp: ts,
			Body: &pb.MessageData_VerificationRemoveBody{VerificationRemoveBody: &pb.VerificationRemoveBody{Address: addr}}})
	}
	return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_VERIFICATION_ADD_ETH_ADDRESS, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_VerificationAddAddressBody{VerificationAddAddressBody: &pb.VerificationAddAddressBody{
			Address: addr, ClaimSignature: []byte{1, 2, 3}, BlockHash: []byte{4, 5, 6}}}})
}

func userData(t testing.TB, fid uint64, ts uint32, typ pb.UserDataType, value string) *pb.Message {
	return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_USER_DATA_ADD, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_UserDataBody{UserDataBody: &pb.UserDataBody{Type: typ, Value: value}}})
}

func lendStorage(t testing.TB, fid uint64, ts uint32, to, units uint64) *pb.Message {
	return sign(t, &pb.MessageData{Type: pb.MessageType_MESSAGE_TYPE_LEND_STORAGE, Fid: fid, Timestamp: ts,
		Body: &pb.MessageData_LendStorageBody{LendStorageBody: &pb.LendStorageBody{ToFid: to, NumUnits: units}}})
}

func castID(m *pb.Message) *pb.CastId { return &pb.CastId{Fid: m.Data.Fid, Hash: m.Hash} }

func merge(m *pb.Message, deleted ...*pb.Message) *pb.HubEvent {
	return &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_MESSAGE, ShardIndex: 1,
		Body: &pb.HubEvent_MergeMessageBody{MergeMessageBody: &pb.MergeMessageBody{Message: m, DeletedMessages: deleted}}}
}

func prune(m *pb.Message) *pb.HubEvent {
	return &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_PRUNE_MESSAGE, ShardIndex: 1,
		Body: &pb.HubEvent_PruneMessageBody{PruneMessageBody: &pb.PruneMessageBody{Message: m}}}
}

func revoke(m *pb.Message) *pb.HubEvent {
	return &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_REVOKE_MESSAGE, ShardIndex: 1,
		Body: &pb.HubEvent_RevokeMessageBody{RevokeMessageBody: &pb.RevokeMessageBody{Message: m}}}
}

func fname(name string, fid uint64, ts uint64) *pb.UserNameProof {
	return &pb.UserNameProof{Name: []byte(name), Fid: fid, Timestamp: ts, Type: pb.UserNameType_USERNAME_TYPE_FNAME,
		Owner: []byte{0xaa, byte(fid)}, Signature: []byte{byte(ts), byte(fid), 0x01}}
}

func proofEvent(p, deleted *pb.UserNameProof) *pb.HubEvent {
	return &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_USERNAME_PROOF, ShardIndex: 1,
		Body: &pb.HubEvent_MergeUsernameProofBody{MergeUsernameProofBody: &pb.MergeUserNameProofBody{UsernameProof: p, DeletedUsernameProof: deleted}}}
}

func txHash(n uint64) []byte {
	b := make([]byte, 32)
	binary.BigEndian.PutUint64(b[24:], n)
	b[0] = 0xee
	return b
}

func onchain(fid uint64, block, logIndex uint32, tx uint64, body any) *pb.HubEvent {
	e := &pb.OnChainEvent{ChainId: 10, BlockNumber: block, BlockHash: []byte{0xbb, byte(block)}, BlockTimestamp: 1_700_000_000 + uint64(block),
		TransactionHash: txHash(tx), LogIndex: logIndex, Fid: fid}
	switch b := body.(type) {
	case *pb.IdRegisterEventBody:
		e.Type = pb.OnChainEventType_EVENT_TYPE_ID_REGISTER
		e.Body = &pb.OnChainEvent_IdRegisterEventBody{IdRegisterEventBody: b}
	case *pb.StorageRentEventBody:
		e.Type = pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT
		e.Body = &pb.OnChainEvent_StorageRentEventBody{StorageRentEventBody: b}
	case *pb.SignerEventBody:
		e.Type = pb.OnChainEventType_EVENT_TYPE_SIGNER
		e.Body = &pb.OnChainEvent_SignerEventBody{SignerEventBody: b}
	case *pb.TierPurchaseBody:
		e.Type = pb.OnChainEventType_EVENT_TYPE_TIER_PURCHASE
		e.Body = &pb.OnChainEvent_TierPurchaseEventBody{TierPurchaseEventBody: b}
	case *pb.SignerMigratedEventBody:
		e.Type = pb.OnChainEventType_EVENT_TYPE_SIGNER_MIGRATED
		e.Body = &pb.OnChainEvent_SignerMigratedEventBody{SignerMigratedEventBody: b}
	}
	return &pb.HubEvent{Type: pb.HubEventType_HUB_EVENT_TYPE_MERGE_ON_CHAIN_EVENT, ShardIndex: 1,
		Body: &pb.HubEvent_MergeOnChainEventBody{MergeOnChainEventBody: &pb.MergeOnChainEventBody{OnChainEvent: e}}}
}

func mustWrite(t testing.TB, w *Writer, evs ...*pb.HubEvent) WriteResult {
	t.Helper()
	res, err := w.Write(context.Background(), evs)
	if err != nil {
		t.Fatalf("write: %v", err)
	}
	return res
}

// liveHashes returns the hashes of table's live rows as a set of strings.
func liveHashes(t testing.TB, pool *pgxpool.Pool, table string) map[string]bool {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT hash FROM `+table+` WHERE deleted_at IS NULL`)
	if err != nil {
		t.Fatalf("query %s: %v", table, err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var h []byte
		if err := rows.Scan(&h); err != nil {
			t.Fatal(err)
		}
		out[string(h)] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func isLive(t testing.TB, pool *pgxpool.Pool, table string, hash []byte) bool {
	t.Helper()
	return liveHashes(t, pool, table)[string(hash)]
}
