//go:build linux

package main

import (
	"bufio"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// settle gives every contender the same start: free memory (with
// -drop-caches, the page cache is dropped, as root), its input files in the
// page cache (this VM's memory manager evicts page cache between runs),
// and a quiet disk (no writes in flight, none written or discarded for a
// second), so that the reclaim, writeback and discards left by the previous
// contender (a deleted image, a written blob) are not billed to the next one.
func settle(inputs ...string) {
	start := time.Now()
	syscall.Sync()
	if *dropCaches {
		// Clean pages only, after the sync: nothing is lost. Without it
		// whoever followed a load that had just filled memory paid for
		// reclaiming it (the first of each round: 1.1-1.3x slower).
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("1"), 0); err != nil {
			log("cannot drop the page cache (%v): run as root, or with -drop-caches=false", err)
			os.Exit(1)
		}
	}
	for _, p := range inputs {
		if f, err := os.Open(p); err == nil {
			io.Copy(io.Discard, f)
			f.Close()
		}
	}
	syscall.Sync()
	quiet, last := 0, diskWrites()
	for quiet < 2 && time.Since(start) < time.Minute {
		time.Sleep(500 * time.Millisecond)
		w := diskWrites()
		if w.inFlight == 0 && w.sectors == last.sectors && w.discarded == last.discarded {
			quiet++
		} else {
			quiet = 0
		}
		last = w
	}
	if d := time.Since(start); d > 5*time.Second {
		log("settle took %.1fs", d.Seconds())
	}
}

type diskStat struct{ sectors, inFlight, discarded int64 }

// diskWrites sums sectors written and I/Os in flight over the block devices
// in /proc/diskstats (partitions count twice, which is harmless: only
// changes matter).
func diskWrites() diskStat {
	var s diskStat
	f, err := os.Open("/proc/diskstats")
	if err != nil {
		return s
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 12 || strings.HasPrefix(fs[2], "loop") || strings.HasPrefix(fs[2], "ram") {
			continue
		}
		w, _ := strconv.ParseInt(fs[9], 10, 64)
		q, _ := strconv.ParseInt(fs[11], 10, 64)
		s.sectors += w
		s.inFlight += q
		if len(fs) > 16 { // sectors discarded (Linux 4.18+)
			d, _ := strconv.ParseInt(fs[16], 10, 64)
			s.discarded += d
		}
	}
	return s
}
