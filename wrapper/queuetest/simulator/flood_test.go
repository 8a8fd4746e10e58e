package simulator

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxi2i/fluxi2i/wrapper/queuetest"
)

// floodReport is what one 31 MiB flood measured.
type floodReport struct {
	ok, refused, results int
	peakHeld             int64 // the server's counter (Stats.PeakBytesHeld)
	peakRSS              int64 // the process's VmHWM, bytes; 0 where /proc has none
	took                 time.Duration
}

// flood31MiB sends n concurrent submits of 31 MiB (a valid image padded to
// 31 MiB of data URI) to the simulator on real loopback connections, each
// from its own source address (127.0.0.x: distinct clients, so the global
// budget is what bites), then fetches every result and image it queued.
func flood31MiB(tb testing.TB, n int) floodReport {
	// The process as `fluxi2i simulate` runs it: the budget's soft limit.
	old := debug.SetMemoryLimit(MemoryLimit(DefaultMaxBytes))
	defer debug.SetMemoryLimit(old)
	srv := queuetest.NewServer(append(Options(Config{}), queuetest.QueueTime(200*time.Millisecond), queuetest.RunTime(300*time.Millisecond))...)
	defer srv.Close()

	var img bytes.Buffer
	src := image.NewNRGBA(image.Rect(0, 0, 512, 512))
	for i := range src.Pix {
		src.Pix[i] = byte(i * 31)
	}
	src.Set(0, 0, color.NRGBA{1, 2, 3, 255})
	if err := png.Encode(&img, src); err != nil {
		tb.Fatal(err)
	}
	// Bytes after IEND are not read by decoders: the image stays cheap to
	// render, the body is 31 MiB.
	pad := 31<<20*3/4 - img.Len() - 200
	raw := append(img.Bytes(), make([]byte, pad)...)
	head := `{"prompt":"a flood","num_images":2,"image_url":"data:image/png;base64,`
	body := make([]byte, len(head)+base64.StdEncoding.EncodedLen(len(raw))+2)
	copy(body, head)
	base64.StdEncoding.Encode(body[len(head):], raw)
	copy(body[len(body)-2:], `"}`)
	if len(body) > 31<<20 || len(body) < 31<<20-1024 {
		tb.Fatalf("body of %d bytes", len(body))
	}

	clientFrom := func(i int) *http.Client {
		d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, byte(i/250), byte(2+i%250))}}
		return &http.Client{Transport: &http.Transport{DialContext: d.DialContext}, Timeout: 2 * time.Minute}
	}
	var mu sync.Mutex
	var rep floodReport
	var ids []string
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			hc := clientFrom(i)
			defer hc.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, srv.URL+"/fal-ai/flux-1/dev/image-to-image", bytes.NewReader(body))
			req.Header.Set("Authorization", "Key k")
			req.Header.Set("Content-Type", "application/json")
			resp, err := hc.Do(req)
			if err != nil {
				tb.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			mu.Lock()
			defer mu.Unlock()
			switch resp.StatusCode {
			case http.StatusOK:
				rep.ok++
				id := string(bytes.Split(bytes.Split(b, []byte(`"request_id":"`))[1], []byte(`"`))[0])
				ids = append(ids, id)
			case http.StatusTooManyRequests:
				rep.refused++
				if resp.Header.Get("Retry-After") == "" {
					tb.Error("a 429 without Retry-After")
				}
			default:
				tb.Errorf("HTTP %d: %.200s", resp.StatusCode, b)
			}
		})
	}
	wg.Wait()
	time.Sleep(600 * time.Millisecond) // the jobs complete
	for _, id := range ids {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/fal-ai/flux-1/requests/"+id, nil)
			req.Header.Set("Authorization", "Key k")
			resp, err := srv.Client().Do(req)
			if err != nil {
				tb.Error(err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				tb.Errorf("result: HTTP %d: %.300s", resp.StatusCode, b)
				return
			}
			mu.Lock()
			rep.results++
			mu.Unlock()
		})
	}
	wg.Wait()
	rep.took = time.Since(start)
	rep.peakHeld = srv.Stats().PeakBytesHeld
	rep.peakRSS = vmHWM()
	return rep
}

// vmHWM is the process's peak resident set, from /proc/self/status.
func vmHWM() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// The 31 MiB flood at full scale: the bytes the simulator holds never
// exceed its budget, whatever arrives at once; the submits past it get
// 429 with Retry-After, the others complete. (The race detector's shadow
// memory and speed make full scale meaningless under -race: queuetest
// floods at a tenth of the scale there.)
func TestFlood31MiBStaysWithinTheBudget(t *testing.T) {
	if raceEnabled || testing.Short() {
		t.Skip("full scale without the race detector and -short (queuetest's flood runs under -race)")
	}
	rep := flood31MiB(t, 30)
	t.Logf("30 submits of 31 MiB: %d queued, %d refused, %d results in %v; peak held %d MiB of a %d MiB budget; peak RSS %d MiB",
		rep.ok, rep.refused, rep.results, rep.took.Round(time.Millisecond), rep.peakHeld>>20, DefaultMaxBytes>>20, rep.peakRSS>>20)
	if rep.peakHeld > DefaultMaxBytes {
		t.Errorf("held %d bytes, more than the budget %d", rep.peakHeld, DefaultMaxBytes)
	}
	// The whole process (the flood's client and its 31 MiB body included)
	// stays near the budget: the soft memory limit, and a margin.
	if limit := MemoryLimit(DefaultMaxBytes) + 64<<20; rep.peakRSS > limit {
		t.Errorf("peak RSS %d MiB, more than %d MiB", rep.peakRSS>>20, limit>>20)
	}
	if rep.ok == 0 || rep.refused == 0 || rep.results != rep.ok {
		t.Errorf("%+v", rep)
	}
}

// BenchmarkFlood31MiB reports the simulator's peak memory under the 31 MiB
// flood (30 concurrent submits) beside its budget: run it alone
// (-run '^$' -bench Flood31MiB -benchtime 1x) for a process peak that is
// the flood's.
func BenchmarkFlood31MiB(b *testing.B) {
	var rep floodReport
	for b.Loop() {
		rep = flood31MiB(b, 30)
	}
	b.ReportMetric(float64(rep.peakHeld)/(1<<20), "peak-held-MiB")
	b.ReportMetric(float64(DefaultMaxBytes)/(1<<20), "budget-MiB")
	b.ReportMetric(float64(rep.peakRSS)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(rep.ok), "queued")
	b.ReportMetric(float64(rep.refused), "refused")
	fmt.Fprintf(io.Discard, "%v", rep)
}
