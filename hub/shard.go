package hub

import (
	"crypto/sha256"
	"encoding/binary"
)

// ShardFor returns the data shard (1..numShards) that holds fid, as the node
// assigns it: the first four bytes of SHA-256 over the fid as a 4-byte
// big-endian integer, read big-endian, modulo numShards, plus one. Fids above
// 2^32 are truncated to 32 bits first, as the node does. With no data shards
// there is no answer, and ShardFor returns 0.
func ShardFor(fid uint64, numShards uint32) uint32 {
	if numShards == 0 {
		return 0
	}
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], uint32(fid))
	sum := sha256.Sum256(b[:])
	return binary.BigEndian.Uint32(sum[:4])%numShards + 1
}
