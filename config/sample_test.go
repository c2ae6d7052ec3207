package config

import (
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// TestSampleDocumentsEveryKey keeps sample.toml and Config in step: every
// key in the file is a field, every field is in the file, each with a
// comment, and the values shown are the real defaults.
func TestSampleDocumentsEveryKey(t *testing.T) {
	const path = "sample.toml"
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// Every value in the file reaches the struct and equals the default.
	cfg, err := Load(LoadOptions{File: path})
	if err != nil {
		t.Fatalf("sample.toml does not load: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(*cfg, want) {
		t.Fatalf("sample.toml values differ from Default():\n got %+v\nwant %+v", *cfg, want)
	}

	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		t.Fatal(err)
	}
	var inFile []string
	for _, k := range md.Keys() {
		if len(k) == 2 {
			inFile = append(inFile, k[0]+"."+k[1])
		}
	}
	var inStruct []string
	typ := reflect.TypeFor[Config]()
	for i := range typ.NumField() {
		sec := typ.Field(i)
		for j := range sec.Type.NumField() {
			inStruct = append(inStruct, tomlName(sec)+"."+tomlName(sec.Type.Field(j)))
		}
	}
	for _, k := range inStruct {
		if !slices.Contains(inFile, k) {
			t.Errorf("%s is a Config field but sample.toml does not document it", k)
		}
	}
	for _, k := range inFile {
		if !slices.Contains(inStruct, k) {
			t.Errorf("sample.toml documents %s, which is not a Config field", k)
		}
	}
	if !slices.Equal(inFile, inStruct) {
		t.Errorf("sample.toml order differs from Config's:\nfile   %v\nstruct %v", inFile, inStruct)
	}

	// Each key or table line follows a comment.
	lines := strings.Split(string(data), "\n")
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		isTable := strings.HasPrefix(line, "[")
		if isTable && !strings.Contains(line, ".") {
			continue // a section header needs no comment of its own
		}
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("sample.toml:%d: %q has no comment above it", i+1, line)
		}
	}
}
