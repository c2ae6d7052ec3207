package config

import (
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// LoadOptions says where Load finds settings beyond the built-in defaults.
type LoadOptions struct {
	// File is the TOML file to read; empty means the file named by
	// WAYPOINT_CONFIG in Env, or no file.
	File string
	// Env is the environment in os.Environ form ("NAME=value"). When a
	// name repeats, the last entry wins.
	Env []string
	// Overrides are applied last, in order: the command-line flags the
	// user gave explicitly.
	Overrides []Override
}

// Override sets one key from the command line, above the environment.
type Override struct {
	// Key is the dotted file key, e.g. "sink.replicas".
	Key string
	// Value is parsed like an environment value; unlike there, an empty
	// Value is applied.
	Value string
	// Name is how the user spelled it, e.g. "--replicas"; errors use it.
	Name string
}

// Load builds the configuration from the defaults, the file, the
// environment and the overrides, in increasing priority, and validates it.
// The error lists every problem found, each naming the key and where it
// came from.
func Load(opts LoadOptions) (*Config, error) {
	l := &loader{cfg: Default(), origins: map[string]origin{}}
	l.v = reflect.ValueOf(&l.cfg).Elem()
	env := envMap(opts.Env)
	file := opts.File
	if file == "" {
		file = env[envFile]
	}
	if file != "" {
		l.loadFile(file)
	}
	l.loadEnv(env)
	for _, o := range opts.Overrides {
		l.override(o)
	}
	l.validate()
	if err := joinErrors(l.errs); err != nil {
		return nil, err
	}
	return &l.cfg, nil
}

// origin records which source set a key and how that source spelled it,
// so that a later validation error can point at the right place.
type origin struct {
	name  string // "database.url", "WAYPOINT_DATABASE__URL" or "--database-url"
	sep   string // between name and shown: " = " in files, "=" elsewhere
	shown string // the value as the user wrote it, safe to print; "" hides it
	where string // "in file x.toml", "in environment", "on the command line"
}

func (o origin) subject() string {
	if o.shown == "" {
		return o.name + " " + o.where
	}
	return o.name + o.sep + o.shown + " " + o.where
}

type loader struct {
	cfg     Config
	v       reflect.Value // addressable cfg
	origins map[string]origin
	errs    []error
}

func (l *loader) fail(o origin, problem string) {
	l.errs = append(l.errs, fmt.Errorf("config: %s: %s", o.subject(), problem))
}

func (l *loader) loadFile(path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		l.errs = append(l.errs, fmt.Errorf("config: read file: %w", err))
		return
	}
	var raw map[string]any
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		// Only the position and the parser's short message: the default
		// rendering quotes the offending line, which may hold a secret.
		var pe toml.ParseError
		if errors.As(err, &pe) {
			l.errs = append(l.errs, fmt.Errorf("config: file %s: line %d: %s", path, pe.Position.Line, pe.Message))
		} else {
			l.errs = append(l.errs, fmt.Errorf("config: file %s: not valid TOML", path))
		}
		return
	}
	where := "in file " + path
	known := sectionNames()
	for _, k := range md.Keys() {
		switch len(k) {
		case 1:
			if !slices.Contains(known, k[0]) {
				l.errs = append(l.errs, fmt.Errorf("config: unknown key %q %s%s", k[0], where, suggest(k[0], sectionNames(), true)))
			} else if _, ok := raw[k[0]].(map[string]any); !ok {
				l.errs = append(l.errs, fmt.Errorf("config: %q %s: want a table ([%s])", k[0], where, k[0]))
			}
		case 2:
			table, ok := raw[k[0]].(map[string]any)
			if !ok || !slices.Contains(known, k[0]) {
				continue // reported with the section
			}
			key := k[0] + "." + k[1]
			f, ok := fieldByKey(key)
			if !ok {
				l.errs = append(l.errs, fmt.Errorf("config: unknown key %q %s%s", key, where, suggest(key, fileKeys(), true)))
				continue
			}
			l.setTOML(f, table[k[1]], where)
		}
	}
}

func (l *loader) setTOML(f field, val any, where string) {
	o := origin{name: f.key, sep: " = ", where: where}
	if f.isTable() {
		entries, ok := val.(map[string]any)
		if !ok {
			l.fail(o, "want a table of strings")
			return
		}
		m := l.v.FieldByIndex(f.index)
		for _, name := range sortedKeys(entries) {
			eo := origin{name: f.key + "." + strconv.Quote(name), sep: " = ", where: where}
			s, ok := entries[name].(string)
			if !ok {
				l.fail(eo, "want a string")
				continue
			}
			entry := strings.ToLower(name)
			m.SetMapIndex(reflect.ValueOf(entry), reflect.ValueOf(s))
			l.origins[f.key+"."+entry] = eo
		}
		return
	}
	o.shown = showTOML(f, val)
	v, problem := fromTOML(f.typ, val)
	if problem != "" {
		l.fail(o, problem)
		return
	}
	l.v.FieldByIndex(f.index).Set(v)
	l.origins[f.key] = o
}

func (l *loader) loadEnv(env map[string]string) {
	names := sortedKeys(env)
	for _, name := range names {
		if !strings.HasPrefix(name, envPrefix) || name == envFile || otherVariable(name) {
			continue
		}
		if !knownEnv(name) {
			hint := suggest(name, envKeys(), false)
			for _, f := range fields() {
				if f.isTable() && name == f.env {
					hint = fmt.Sprintf(" (set one variable per entry: %s__<NAME>)", f.env)
				}
			}
			l.errs = append(l.errs, fmt.Errorf("config: unknown key %s in environment%s", name, hint))
		}
	}
	for _, f := range fields() {
		if f.isTable() {
			prefix := f.env + "__"
			m := l.v.FieldByIndex(f.index)
			for _, name := range names {
				suffix, ok := strings.CutPrefix(name, prefix)
				if !ok || env[name] == "" {
					continue
				}
				o := origin{name: name, where: "in environment"}
				if suffix == "" {
					l.fail(o, "want an entry name after "+prefix)
					continue
				}
				entry := strings.ReplaceAll(strings.ToLower(suffix), "_", "-")
				m.SetMapIndex(reflect.ValueOf(entry), reflect.ValueOf(env[name]))
				l.origins[f.key+"."+entry] = o
			}
			continue
		}
		// The WAYPOINT_ name wins over the aliases, which are only looked
		// at when it is unset: a stray LOG_LEVEL meant for another program
		// cannot break a configuration that sets WAYPOINT_LOG__LEVEL.
		for _, name := range append([]string{f.env}, f.aliases...) {
			raw := env[name]
			if raw == "" {
				continue
			}
			l.setText(f, raw, origin{name: name, sep: "=", shown: showText(f, raw), where: "in environment"})
			break
		}
	}
}

func (l *loader) override(ov Override) {
	name := ov.Name
	if name == "" {
		name = ov.Key
	}
	o := origin{name: name, sep: "=", where: "on the command line"}
	f, ok := fieldByKey(ov.Key)
	if !ok {
		l.errs = append(l.errs, fmt.Errorf("config: unknown key %q %s", ov.Key, o.where))
		return
	}
	if f.isTable() {
		l.fail(o, f.key+" is a table and cannot be set from one value")
		return
	}
	o.shown = showText(f, ov.Value)
	l.setText(f, ov.Value, o)
}

func (l *loader) setText(f field, raw string, o origin) {
	v, problem := fromText(f.typ, raw)
	if problem != "" {
		l.fail(o, problem)
		return
	}
	l.v.FieldByIndex(f.index).Set(v)
	l.origins[f.key] = o
}

// originOf says where the current value of key came from.
func (l *loader) originOf(key string) origin {
	if o, ok := l.origins[key]; ok {
		return o
	}
	o := origin{name: key, sep: " = ", where: "(default)"}
	f, ok := fieldByKey(key)
	if !ok {
		return o
	}
	switch v := l.v.FieldByIndex(f.index); v.Kind() {
	case reflect.String:
		o.shown = showText(f, v.String())
	case reflect.Int, reflect.Bool:
		o.shown = fmt.Sprint(v.Interface())
	}
	return o
}

const (
	wantInt   = "want an integer"
	wantBool  = "want true or false"
	wantStr   = "want a string"
	wantShard = "want a list of integers from 0 to 4294967295"
)

// fromText parses an environment or flag value.
func fromText(t reflect.Type, s string) (reflect.Value, string) {
	switch t.Kind() {
	case reflect.String:
		return reflect.ValueOf(s).Convert(t), ""
	case reflect.Int:
		n, err := strconv.ParseInt(s, 10, strconv.IntSize)
		if err != nil {
			return reflect.Value{}, wantInt
		}
		return reflect.ValueOf(int(n)).Convert(t), ""
	case reflect.Bool:
		b, err := strconv.ParseBool(s)
		if err != nil {
			return reflect.Value{}, wantBool
		}
		return reflect.ValueOf(b).Convert(t), ""
	case reflect.Slice:
		if t.Elem().Kind() != reflect.Uint32 {
			break
		}
		out := []uint32{}
		if strings.TrimSpace(s) == "" {
			return reflect.ValueOf(out), ""
		}
		for _, part := range strings.Split(s, ",") {
			n, err := strconv.ParseUint(strings.TrimSpace(part), 10, 32)
			if err != nil {
				return reflect.Value{}, "want a comma-separated " + strings.TrimPrefix(wantShard, "want a ")
			}
			out = append(out, uint32(n))
		}
		return reflect.ValueOf(out), ""
	}
	return reflect.Value{}, "unsupported key type " + t.String()
}

// fromTOML converts a decoded TOML value.
func fromTOML(t reflect.Type, v any) (reflect.Value, string) {
	switch t.Kind() {
	case reflect.String:
		s, ok := v.(string)
		if !ok {
			return reflect.Value{}, wantStr
		}
		return reflect.ValueOf(s).Convert(t), ""
	case reflect.Int:
		n, ok := v.(int64)
		if !ok || n < math.MinInt || n > math.MaxInt {
			return reflect.Value{}, wantInt
		}
		return reflect.ValueOf(int(n)).Convert(t), ""
	case reflect.Bool:
		b, ok := v.(bool)
		if !ok {
			return reflect.Value{}, wantBool
		}
		return reflect.ValueOf(b).Convert(t), ""
	case reflect.Slice:
		if t.Elem().Kind() != reflect.Uint32 {
			break
		}
		list, ok := v.([]any)
		if !ok {
			return reflect.Value{}, wantShard
		}
		out := make([]uint32, 0, len(list))
		for _, e := range list {
			n, ok := e.(int64)
			if !ok || n < 0 || n > math.MaxUint32 {
				return reflect.Value{}, wantShard
			}
			out = append(out, uint32(n))
		}
		return reflect.ValueOf(out), ""
	}
	return reflect.Value{}, "unsupported key type " + t.String()
}

// showText renders a value for an error message without revealing a
// secret: secret values are hidden, URLs lose their passwords, and a URL
// too broken to redact is hidden whole.
func showText(f field, raw string) string {
	switch f.redact {
	case "value":
		return ""
	case "url", "urls":
		r, ok := redactURLs(raw, f.redact == "urls")
		if !ok {
			return ""
		}
		return strconv.Quote(r)
	}
	return strconv.Quote(raw)
}

func showTOML(f field, v any) string {
	if s, ok := v.(string); ok {
		return showText(f, s)
	}
	if f.redact != "" {
		return ""
	}
	switch v.(type) {
	case int64, bool, float64:
		return fmt.Sprint(v)
	}
	return ""
}

func knownEnv(name string) bool {
	for _, f := range fields() {
		if f.isTable() {
			if strings.HasPrefix(name, f.env+"__") {
				return true
			}
			continue
		}
		if name == f.env {
			return true
		}
	}
	return false
}

func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if ok && k != "" {
			m[k] = v
		}
	}
	return m
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func fileKeys() []string {
	var out []string
	for _, f := range fields() {
		out = append(out, f.key)
	}
	return out
}

func envKeys() []string {
	var out []string
	for _, f := range fields() {
		out = append(out, f.env)
	}
	return out
}

// suggest returns a " (did you mean X?)" hint for a near miss.
func suggest(got string, candidates []string, quote bool) string {
	best, bestDist := "", 4
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(got), strings.ToLower(c)); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" {
		return ""
	}
	if quote {
		best = strconv.Quote(best)
	}
	return fmt.Sprintf(" (did you mean %s?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func joinErrors(errs []error) error {
	if len(errs) == 0 {
		return nil
	}
	return errors.Join(errs...)
}
