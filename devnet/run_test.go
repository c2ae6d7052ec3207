package devnet_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/waypointhq/waypoint/devnet"
)

func TestRunDumpsState(t *testing.T) {
	t.Parallel()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "state.jsonl")
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	opts := devnet.Options{Seed: 2, FIDs: 5, Preload: 500, BlockInterval: 10 * time.Millisecond, Rate: 500, DumpState: path}
	if err := devnet.Run(ctx, opts, lis); err != nil {
		t.Fatalf("Run: %v", err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stores := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var line struct {
			Store string `json:"store"`
			Fid   uint64 `json:"fid"`
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil || line.Store == "" || line.Fid == 0 {
			t.Fatalf("state line %q: %v", sc.Text(), err)
		}
		stores[line.Store]++
	}
	for _, s := range []devnet.Store{devnet.StoreCasts, devnet.StoreUserData, devnet.StoreUsernameProofs, devnet.StoreOnChainEvents} {
		if stores[string(s)] == 0 {
			t.Errorf("no %s in the dump: %v", s, stores)
		}
	}
	if _, err := devnet.New(devnet.Options{Preload: 10}); err == nil {
		t.Error("a preload without fids was accepted")
	}
}
