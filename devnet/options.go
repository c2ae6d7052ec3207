package devnet

import (
	"log/slog"
	"time"

	pb "github.com/waypointhq/waypoint/proto"
)

// DefaultBlockInterval is the block cadence of mainnet Snapchain, and the
// value the CLI uses when --block-interval is not given.
const DefaultBlockInterval = time.Second

// DefaultRetention is how long Snapchain keeps events.
const DefaultRetention = 72 * time.Hour

// Options configures a simulator. The zero value is a usable two-shard
// devnet with no generated workload that cuts a block as soon as something
// is submitted.
type Options struct {
	// Shards is the number of data shards, numbered 1..Shards; shard 0 is the
	// block shard and carries no user data. Zero means 2, as on mainnet.
	Shards uint32
	// Seed seeds the workload generator. The same seed and options produce
	// the same events, byte for byte.
	Seed uint64
	// FIDs is the number of simulated users (fids 1..FIDs) the workload
	// generates traffic for. Zero disables the workload; Submit still works.
	FIDs int
	// Rate is how many messages, on-chain events and fname proofs the
	// workload submits per second (before per-shard copies, prunes and block
	// confirmations). Zero means 100. A block takes at most 16383 of them,
	// which caps the rate at 16383 per BlockInterval.
	Rate float64
	// Duration is how long the live workload runs after the preload. Zero
	// means until the simulator stops.
	Duration time.Duration
	// Preload is the number of events (across all shards, block
	// confirmations included) generated before serving starts, so that
	// Subscribe with from_id replays a backlog. It needs FIDs.
	Preload int
	// BlockInterval is the time between blocks; every data shard cuts one
	// block per interval, empty or not. Zero cuts a block as soon as events
	// are pending: Submit returns with its events already in the stream.
	BlockInterval time.Duration
	// Retention is how long events are kept, measured on block timestamps. A
	// Subscribe from an older id starts at the oldest kept event. Zero means
	// 72 hours.
	Retention time.Duration
	// Network is the Farcaster network generated messages carry and
	// submitted messages must carry. Zero means FARCASTER_NETWORK_DEVNET.
	Network pb.FarcasterNetwork
	// Start is where the logical clock starts: block timestamps and the
	// timestamps of generated messages derive from it, never from the wall
	// clock, so that runs with the same seed produce the same bytes. Zero
	// means 2025-06-01T00:00:00Z.
	Start time.Time
	// Limits are the per-storage-unit message limits past which the oldest
	// messages are pruned. Zero fields take the 2025 unit's values.
	Limits Limits
	// Faults injects delivery faults into Subscribe streams.
	Faults Faults
	// Serving limits on what clients send and hold open. Zero values take
	// the defaults below.
	Serving ServingLimits
	// DumpState, when set, is a file Run writes the ground-truth state to
	// (JSON lines, see DumpState) when it stops.
	DumpState string
	// Logger receives progress and fault logs. Nil discards them.
	Logger *slog.Logger
}

// Limits are per-unit storage limits, one field per store.
type Limits struct {
	// Casts per unit (adds and removes). Zero means 100.
	Casts int
	// Links per unit. Zero means 200.
	Links int
	// Reactions per unit. Zero means 200.
	Reactions int
	// UserData per unit. Zero means 25.
	UserData int
	// UsernameProofs per unit (USERNAME_PROOF messages). Zero means 2.
	UsernameProofs int
	// Verifications per unit. Zero means 5.
	Verifications int
}

// ServingLimits bound what one client can make the simulator read, hold
// or build, so that a broken or hostile client cannot exhaust it.
type ServingLimits struct {
	// MaxRequestBytes bounds one request message; a larger one fails with
	// RESOURCE_EXHAUSTED before it is decoded. Zero means
	// DefaultMaxRequestBytes.
	MaxRequestBytes int
	// MaxPageSize caps page_size in paged reads: a larger one is served as
	// this many items, with a next_page_token to go on. Zero means
	// DefaultMaxPageSize.
	MaxPageSize int
	// MaxStreamsPerConn bounds the calls in flight on one HTTP/2
	// connection; a client's further calls wait for one to end. Zero means
	// DefaultMaxStreamsPerConn.
	MaxStreamsPerConn uint32
	// MaxSubscribers bounds the Subscribe streams open at once, across all
	// clients; one more fails with RESOURCE_EXHAUSTED. Zero means
	// DefaultMaxSubscribers.
	MaxSubscribers int
}

// Defaults of ServingLimits.
const (
	DefaultMaxRequestBytes   = 4 << 20
	DefaultMaxPageSize       = 10000
	DefaultMaxStreamsPerConn = 1000
	DefaultMaxSubscribers    = 256
)

// Faults are delivery faults applied to every Subscribe stream. The same
// faults can be triggered at run time with DropNext, SetUnavailableEvery,
// Stall and ExpireEvents.
type Faults struct {
	// DropEvery hides every Nth event of each shard (block confirmations
	// excepted) from live Subscribe streams: a silent gap that the block's
	// BLOCK_CONFIRMED counts still reveal. Replays and GetEvents still
	// return the event. Zero disables it.
	DropEvery int
	// UnavailableEvery ends each Subscribe stream with UNAVAILABLE after it
	// has sent N events. Zero disables it.
	UnavailableEvery int
	// StallEvery, together with StallFor, stops all Subscribe streams from
	// sending for StallFor once every StallEvery. Zero disables it.
	StallEvery time.Duration
	// StallFor is how long each periodic stall lasts.
	StallFor time.Duration
}

func (o Options) withDefaults() Options {
	if o.Shards == 0 {
		o.Shards = 2
	}
	if o.Rate <= 0 {
		o.Rate = 100
	}
	if o.Retention <= 0 {
		o.Retention = DefaultRetention
	}
	if o.BlockInterval < 0 {
		o.BlockInterval = 0
	}
	if o.Network == pb.FarcasterNetwork_FARCASTER_NETWORK_NONE {
		o.Network = pb.FarcasterNetwork_FARCASTER_NETWORK_DEVNET
	}
	if o.Start.IsZero() {
		o.Start = time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	}
	l := &o.Limits
	for _, f := range []struct {
		p *int
		d int
	}{{&l.Casts, 100}, {&l.Links, 200}, {&l.Reactions, 200}, {&l.UserData, 25}, {&l.UsernameProofs, 2}, {&l.Verifications, 5}} {
		if *f.p <= 0 {
			*f.p = f.d
		}
	}
	sl := &o.Serving
	orDefault(&sl.MaxRequestBytes, DefaultMaxRequestBytes)
	orDefault(&sl.MaxPageSize, DefaultMaxPageSize)
	orDefault(&sl.MaxStreamsPerConn, DefaultMaxStreamsPerConn)
	orDefault(&sl.MaxSubscribers, DefaultMaxSubscribers)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// orDefault replaces a zero or negative limit with its default.
func orDefault[T int | uint32](p *T, d T) {
	if *p <= 0 {
		*p = d
	}
}
