package endpoint

import "testing"

func TestID(t *testing.T) {
	if got := ID(); got != "fal-ai/flux-1/dev/image-to-image" {
		t.Fatalf("ID() = %q", got)
	}
}
