package backfill

import (
	"context"
	"fmt"
	"iter"

	"google.golang.org/grpc"

	pb "github.com/waypointhq/waypoint/proto"
)

// FIDList yields fids in order.
func FIDList(fids ...uint64) iter.Seq2[uint64, error] {
	return func(yield func(uint64, error) bool) {
		for _, f := range fids {
			if !yield(f, nil) {
				return
			}
		}
	}
}

// FIDRange yields first..last inclusive; FID 0 does not exist and is left
// out.
func FIDRange(first, last uint64) iter.Seq2[uint64, error] {
	return func(yield func(uint64, error) bool) {
		first = max(first, 1)
		for f := first; f <= last; f++ {
			// The f == last check ends the loop before f++ could wrap.
			if !yield(f, nil) || f == last {
				return
			}
		}
	}
}

// FIDLister is the part of the HubService client that discovers FIDs;
// pb.HubServiceClient implements it.
type FIDLister interface {
	GetInfo(ctx context.Context, in *pb.GetInfoRequest, opts ...grpc.CallOption) (*pb.GetInfoResponse, error)
	GetFids(ctx context.Context, in *pb.FidsRequest, opts ...grpc.CallOption) (*pb.FidsResponse, error)
}

// HubFIDs yields every FID the hub knows, shard by shard (GetFids is per
// data shard), reading pageSize FIDs per request.
func HubFIDs(ctx context.Context, h FIDLister, pageSize uint32) iter.Seq2[uint64, error] {
	return func(yield func(uint64, error) bool) {
		info, err := h.GetInfo(ctx, &pb.GetInfoRequest{})
		if err != nil {
			yield(0, fmt.Errorf("list fids: get info: %w", err))
			return
		}
		for _, shard := range dataShards(info) {
			for f, err := range shardFIDs(ctx, h, shard, pageSize) {
				if !yield(f, err) || err != nil {
					return
				}
			}
		}
	}
}

// shardFIDs yields every FID of one data shard, reading pageSize FIDs per
// request.
func shardFIDs(ctx context.Context, h FIDLister, shard, pageSize uint32) iter.Seq2[uint64, error] {
	return func(yield func(uint64, error) bool) {
		var token []byte
		for {
			resp, err := h.GetFids(ctx, &pb.FidsRequest{PageSize: &pageSize, PageToken: token, ShardId: shard})
			if err != nil {
				yield(0, fmt.Errorf("list fids of shard %d: %w", shard, err))
				return
			}
			for _, f := range resp.GetFids() {
				if !yield(f, nil) {
					return
				}
			}
			token = resp.GetNextPageToken()
			if len(token) == 0 {
				return
			}
		}
	}
}

// HubFIDCount returns the number of registered FIDs the hub reports, for a
// progress bar over HubFIDs.
func HubFIDCount(ctx context.Context, h FIDLister) (int, error) {
	info, err := h.GetInfo(ctx, &pb.GetInfoRequest{})
	if err != nil {
		return 0, fmt.Errorf("count fids: get info: %w", err)
	}
	n := uint64(0)
	for _, si := range info.GetShardInfos() {
		if si.GetShardId() != 0 {
			n += si.GetNumFidRegistrations()
		}
	}
	if n == 0 {
		n = info.GetDbStats().GetNumFidRegistrations()
	}
	return int(n), nil
}

// dataShards returns the data shard ids: those listed in shard_infos other
// than the metadata shard 0, else 1..num_shards.
func dataShards(info *pb.GetInfoResponse) []uint32 {
	var out []uint32
	for _, si := range info.GetShardInfos() {
		if si.GetShardId() != 0 {
			out = append(out, si.GetShardId())
		}
	}
	if len(out) > 0 {
		return out
	}
	for s := uint32(1); s <= info.GetNumShards(); s++ {
		out = append(out, s)
	}
	return out
}
