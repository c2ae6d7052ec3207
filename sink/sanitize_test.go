package sink

import (
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestCleanText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", "plain"},
		{"", ""},
		{"héllo wörld", "héllo wörld"},
		{"a\x00b", "ab"},
		{"\x00\x00", ""},
		{"bad \xff byte", "bad \uFFFD byte"},
		{"é\x00\xc3", "é\uFFFD"},
		{"truncated \xe2\x82", "truncated \uFFFD"},
	} {
		got := cleanText(tc.in)
		if got != tc.want {
			t.Errorf("cleanText(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !utf8.ValidString(got) {
			t.Errorf("cleanText(%q) is not valid UTF-8", tc.in)
		}
	}
}

func TestCleanTextDoesNotAllocateOnValidInput(t *testing.T) {
	s := "a perfectly ordinary cast with ünïcode"
	if n := testing.AllocsPerRun(100, func() { _ = cleanText(s) }); n != 0 {
		t.Fatalf("cleanText allocates %v times on valid input", n)
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, in := range []string{"", "plain", `quo"te`, `back\slash`, "new\nline\ttab\r", "ctl\x01\x1f", "ünï"} {
		b := appendJSONString(nil, in)
		var back string
		if err := json.Unmarshal(b, &back); err != nil || back != in {
			t.Errorf("appendJSONString(%q) = %s: decodes to %q, %v", in, b, back, err)
		}
	}
}
