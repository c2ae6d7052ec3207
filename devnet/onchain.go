package devnet

import (
	"crypto/sha256"
	"encoding/binary"
	"time"

	pb "github.com/waypointhq/waypoint/proto"
)

// Register submits the on-chain events that make fid a user: an
// ID_REGISTER to a custody address derived from the fid, a SIGNER add of
// signer's key and a STORAGE_RENT of units 2025 storage units.
func (s *Sim) Register(fid uint64, signer *Signer, units uint32) error {
	s.mu.Lock()
	s.chainSeq++
	seq := s.chainSeq
	now := s.opts.Start.Add(s.clock)
	s.mu.Unlock()
	custody := derived("custody", fid)[:20]
	base := func(t pb.OnChainEventType, logIndex uint32) *pb.OnChainEvent {
		return &pb.OnChainEvent{
			Type: t, ChainId: 10, BlockNumber: 120_000_000 + uint32(seq), BlockHash: derived("block", seq),
			BlockTimestamp: uint64(now.Unix()), TransactionHash: derived("tx", seq), LogIndex: logIndex, Fid: fid, Version: 2,
		}
	}
	reg := base(pb.OnChainEventType_EVENT_TYPE_ID_REGISTER, 0)
	reg.Body = &pb.OnChainEvent_IdRegisterEventBody{IdRegisterEventBody: &pb.IdRegisterEventBody{
		To: custody, EventType: pb.IdRegisterEventType_ID_REGISTER_EVENT_TYPE_REGISTER,
	}}
	key := base(pb.OnChainEventType_EVENT_TYPE_SIGNER, 1)
	key.Body = &pb.OnChainEvent_SignerEventBody{SignerEventBody: &pb.SignerEventBody{
		Key: signer.PublicKey(), KeyType: 1, EventType: pb.SignerEventType_SIGNER_EVENT_TYPE_ADD, MetadataType: 1,
	}}
	rent := base(pb.OnChainEventType_EVENT_TYPE_STORAGE_RENT, 2)
	rent.Body = &pb.OnChainEvent_StorageRentEventBody{StorageRentEventBody: &pb.StorageRentEventBody{
		Payer: custody, Units: units, Expiry: uint32(now.Add(365 * 24 * time.Hour).Unix()),
	}}
	return s.SubmitOnChainEvents(reg, key, rent)
}

func derived(label string, n uint64) []byte {
	b := binary.BigEndian.AppendUint64([]byte("devnet-register:"+label), n)
	sum := sha256.Sum256(b)
	return sum[:]
}
