package bus

import (
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// TestPartitionMatchesServerMapping configures a real server subject
// mapping with the partition() function and checks that Partition agrees
// with where the server routes each FID.
func TestPartitionMatchesServerMapping(t *testing.T) {
	srv, err := server.NewServer(&server.Options{DontListen: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Shutdown)
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	counts := []int{16, 1, 7, 64, 1024}
	for _, n := range counts {
		src := "in" + strconv.Itoa(n) + ".*"
		dst := "out" + strconv.Itoa(n) + ".{{partition(" + strconv.Itoa(n) + ",1)}}.{{wildcard(1)}}"
		if err := srv.GlobalAccount().AddMapping(src, dst); err != nil {
			t.Fatalf("add mapping %s -> %s: %v", src, dst, err)
		}
	}
	nc, err := nats.Connect("", nats.InProcessServer(srv))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	fids := []uint64{0, 1, 2, 3, 9, 10, 99, 1234, 1 << 32, math.MaxUint32, math.MaxUint64}
	for i := uint64(4); i < 3000; i++ {
		fids = append(fids, i)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		fids = append(fids, rng.Uint64N(2_000_000))
		fids = append(fids, rng.Uint64())
	}

	for _, n := range counts {
		sub, err := nc.SubscribeSync("out" + strconv.Itoa(n) + ".>")
		if err != nil {
			t.Fatal(err)
		}
		if err := sub.SetPendingLimits(-1, -1); err != nil {
			t.Fatal(err)
		}
		for _, fid := range fids {
			if err := nc.Publish("in"+strconv.Itoa(n)+"."+strconv.FormatUint(fid, 10), nil); err != nil {
				t.Fatal(err)
			}
		}
		for range fids {
			m, err := sub.NextMsg(5 * time.Second)
			if err != nil {
				t.Fatalf("n=%d: %v", n, err)
			}
			tok := strings.Split(m.Subject, ".")
			if len(tok) != 3 {
				t.Fatalf("mapped subject %q", m.Subject)
			}
			fid, _ := strconv.ParseUint(tok[2], 10, 64)
			want, _ := strconv.Atoi(tok[1])
			if got := Partition(fid, n); got != want {
				t.Fatalf("Partition(%d, %d) = %d, server mapped to %d", fid, n, got, want)
			}
		}
		_ = sub.Unsubscribe()
	}
}

func TestPartitionIsFNV1a(t *testing.T) {
	for fid := uint64(0); fid < 500; fid++ {
		h := fnv.New32a()
		h.Write([]byte(strconv.FormatUint(fid, 10)))
		if got, want := Partition(fid, 16), int(h.Sum32()%16); got != want {
			t.Fatalf("Partition(%d,16)=%d want %d", fid, got, want)
		}
	}
	if Partition(5, 0) != 0 {
		t.Fatal("Partition with n=0 must not divide by zero")
	}
}

func TestSubjects(t *testing.T) {
	tests := []struct {
		fid  uint64
		n    int
		want string
	}{
		{fid: 1, n: 16, want: "waypoint.events." + strconv.Itoa(Partition(1, 16)) + ".1"},
		{fid: 1234, n: 4, want: "waypoint.events." + strconv.Itoa(Partition(1234, 4)) + ".1234"},
		{fid: 0, n: 1, want: "waypoint.events.0.0"},
	}
	for _, tt := range tests {
		got := EventSubject(tt.fid, tt.n)
		if got != tt.want {
			t.Errorf("EventSubject(%d,%d)=%q want %q", tt.fid, tt.n, got, tt.want)
		}
		p, fid, err := ParseEventSubject(got)
		if err != nil || fid != tt.fid || p != Partition(tt.fid, tt.n) {
			t.Errorf("ParseEventSubject(%q) = %d, %d, %v", got, p, fid, err)
		}
	}
	if got := BlockSubject(2); got != "waypoint.blocks.2" {
		t.Errorf("BlockSubject(2)=%q", got)
	}
	if got := PartitionFilter(3); got != "waypoint.events.3.>" {
		t.Errorf("PartitionFilter(3)=%q", got)
	}
	for _, bad := range []string{"", "waypoint.events.", "waypoint.events.x.1", "waypoint.events.1", "waypoint.events.1.x", "waypoint.blocks.1", "waypoint.events.-1.5"} {
		if _, _, err := ParseEventSubject(bad); err == nil {
			t.Errorf("ParseEventSubject(%q) accepted", bad)
		}
	}
}
