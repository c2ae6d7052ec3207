package config

import (
	"reflect"
	"strings"
	"sync"
)

const (
	envPrefix = "WAYPOINT_"
	// envFile names the file to read when LoadOptions.File is empty.
	envFile = "WAYPOINT_CONFIG"
	// envTestPrefix is reserved for the test harness's own variables
	// (WAYPOINT_TEST_NATS_SERVER and the like), which are not keys.
	envTestPrefix = "WAYPOINT_TEST_"
	redacted      = "REDACTED"
)

// otherVariable reports whether name, which has the WAYPOINT_ prefix, is
// not a configuration key, so the loader must not reject it as a misspelt
// one: WAYPOINT_TRACE_FORCE, which the telemetry package reads, and the
// variables of the project's own tooling (deploy/local/services.sh, the
// benchmarks, the fault suite, the cluster's NATS configuration), which an
// operator may well have exported in the shell that runs waypoint. No key
// can take one of these forms: every key's variable has a double
// underscore.
func otherVariable(name string) bool {
	switch name {
	case "WAYPOINT_TRACE_FORCE",
		"WAYPOINT_PG_PORT", "WAYPOINT_REDIS_PORT", "WAYPOINT_CACHE_DIR", "WAYPOINT_DEBIAN_MIRROR",
		"WAYPOINT_NATS_PASSWORD":
		return true
	}
	for _, p := range [...]string{envTestPrefix, "WAYPOINT_BENCH_", "WAYPOINT_FAULTS_", "WAYPOINT_JAEGER_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// field is one key of Config, with its names in every source.
type field struct {
	key     string // dotted file key: "database.max_connections"
	section string // "database"
	name    string // key within its section: "max_connections"
	env     string // "WAYPOINT_DATABASE__MAX_CONNECTIONS"
	aliases []string
	index   []int
	typ     reflect.Type
	redact  string // "", "url", "urls" or "value"
}

func (f field) isTable() bool { return f.typ.Kind() == reflect.Map }

// fields is computed once from Config's struct tags; the result is never
// modified.
var fields = sync.OnceValue(func() []field {
	t := reflect.TypeFor[Config]()
	var out []field
	for i := range t.NumField() {
		sec := t.Field(i)
		secName := tomlName(sec)
		for j := range sec.Type.NumField() {
			f := sec.Type.Field(j)
			name := tomlName(f)
			out = append(out, field{
				key:     secName + "." + name,
				section: secName,
				name:    name,
				env:     envPrefix + strings.ToUpper(secName) + "__" + strings.ToUpper(name),
				aliases: strings.Fields(f.Tag.Get("alias")),
				index:   []int{i, j},
				typ:     f.Type,
				redact:  f.Tag.Get("redact"),
			})
		}
	}
	return out
})

func tomlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if name == "" {
		return strings.ToLower(f.Name)
	}
	return name
}

func fieldByKey(key string) (field, bool) {
	for _, f := range fields() {
		if f.key == key {
			return f, true
		}
	}
	return field{}, false
}

// sectionNames lists the file's table names in struct order.
func sectionNames() []string {
	var out []string
	for _, f := range fields() {
		sec := f.section
		if len(out) == 0 || out[len(out)-1] != sec {
			out = append(out, sec)
		}
	}
	return out
}
