package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// The fleet benchmark (-remote): the layer pair through Debian's
// docker-registry on loopback (scripts/registry.sh), imgcache against
// docker push, docker load and docker pull in the same run.

const benchRegistry = "127.0.0.1:5055"

// registry (re)starts the bench registry with empty storage.
func registry(fresh bool) error {
	dir := filepath.Join(*work, "registry")
	env := append(os.Environ(), "REGISTRY_ADDR="+benchRegistry, "REGISTRY_DIR="+dir)
	stop := exec.Command("scripts/registry.sh", "stop")
	stop.Env = env
	stop.Run()
	if fresh {
		os.RemoveAll(filepath.Join(dir, "storage"))
	}
	start := exec.Command("scripts/registry.sh")
	start.Env = env
	if out, err := start.CombinedOutput(); err != nil {
		return fmt.Errorf("scripts/registry.sh: %v: %s", err, out)
	}
	return nil
}

func registryBytes() int64 { return dirSize(filepath.Join(*work, "registry", "storage")) }

func remoteBench(ctx context.Context, bin string) error {
	imgs, err := ensurePair(ctx)
	if err != nil {
		return err
	}
	goImg, jvm := imgs[0], imgs[1]
	R := benchRegistry + "/bench/imgcache"
	ic := func(dir string, args ...string) []string {
		return append([]string{bin, "--dir", dir, "-q", "--remote", R}, args...)
	}
	s := series{}
	m := func(key string, inputs []string, args ...string) {
		settle(inputs...)
		x := must(measure(args...))
		s.add(key, x)
		log("  %-40s %8.3fs", key, x.secs)
	}
	hostA := filepath.Join(*work, "remote-hostA")
	os.RemoveAll(hostA)
	for _, im := range imgs {
		must(measure(ic(hostA, "put", im.name, im.tar)...))
	}
	aFiles := func() []string {
		f, _ := filepath.Glob(filepath.Join(hostA, "layers", "blobs", "sha256", "*"))
		return f
	}
	dockerRef := benchRegistry + "/bench/docker:go"
	var facts remoteFacts
	pushes := *only == "" || strings.Contains(*only, "push")
	for r := 1; r <= *rounds; r++ {
		log("round %d/%d", r, *rounds)
		// Push of go, the cache holding it, into an empty registry.
		if pushes {
			rotate(r,
				func() {
					must(sample{}, registry(true))
					m("imgcache push", aFiles(), ic(hostA, "push", goImg.name)...)
				},
				func() {
					must(sample{}, registry(true))
					resetDaemon(ctx, goImg)
					exec.Command("docker", "tag", goImg.id, dockerRef).Run()
					m("docker push", nil, "docker", "push", "-q", dockerRef)
				})
		}
		// Both in the registry: imgcache's entries and docker's image.
		must(sample{}, registry(true))
		must(measure(ic(hostA, "push", goImg.name)...))
		facts.RegistryGo = registryBytes()
		must(measure(ic(hostA, "push", jvm.name)...))
		facts.RegistryBoth = registryBytes()
		resetDaemon(ctx, goImg)
		exec.Command("docker", "tag", goImg.id, dockerRef).Run()
		must(measure("docker", "push", "-q", dockerRef))
		exec.Command("docker", "rmi", dockerRef).Run()

		// get of go on a host with an empty cache and an empty daemon.
		hostB := filepath.Join(*work, "remote-hostB")
		rotate(r,
			func() {
				os.RemoveAll(hostB)
				resetDaemon(ctx)
				m("get, empty host (pull + load)", nil, ic(hostB, "get", goImg.name)...)
			},
			func() {
				resetDaemon(ctx)
				m("docker load -i, empty daemon", []string{goImg.tar}, "docker", "load", "-q", "-i", goImg.tar)
			},
			func() {
				resetDaemon(ctx)
				exec.Command("docker", "rmi", dockerRef).Run()
				m("docker pull, empty daemon", nil, "docker", "pull", "-q", dockerRef)
				exec.Command("docker", "rmi", dockerRef).Run()
			})
		// jvm on host B, which pulled go: only jvm's own blobs come.
		os.RemoveAll(hostB)
		resetDaemon(ctx)
		must(measure(ic(hostB, "get", goImg.name)...))
		out, err := exec.Command(ic(hostB, "pull", jvm.name, "--json")[0], ic(hostB, "pull", jvm.name, "--json")[1:]...).Output()
		if err != nil {
			return fmt.Errorf("pull jvm: %v", err)
		}
		var p []struct {
			Fetched int   `json:"fetched"`
			Bytes   int64 `json:"bytes"`
		}
		if err := json.Unmarshal(out, &p); err != nil || len(p) != 1 {
			return fmt.Errorf("pull --json: %s", out)
		}
		facts.SecondFetched, facts.SecondBytes = p[0].Fetched, p[0].Bytes
		m("get of jvm, go pulled and loaded", nil, ic(hostB, "get", jvm.name)...)
	}
	facts.OwnLayer = jvm.ownLayer
	facts.BaseStored = dirSize(filepath.Join(hostA, "layers", "blobs")) // both images, base once
	exec.Command("scripts/registry.sh", "stop").Run()
	return remoteReport(s, facts)
}

type remoteFacts struct {
	RegistryGo, RegistryBoth int64 // registry storage after pushing go, then jvm too
	SecondFetched            int
	SecondBytes, OwnLayer    int64
	BaseStored               int64
}

func remoteReport(s series, f remoteFacts) error {
	rows := []ratioRow{}
	add := func(fig, a, b string, target float64) {
		xa, xb := s[a], s[b]
		if len(xa) == 0 || len(xa) != len(xb) {
			return
		}
		r := ratioRow{Figure: fig, A: a, B: b, AMed: median(xa), BMed: median(xb), Target: target}
		var rs []sample
		r.Min, r.Max = 1e9, 0
		for i := range xa {
			q := xa[i].secs / xb[i].secs
			r.Ratios = append(r.Ratios, q)
			rs = append(rs, sample{secs: q})
			r.Min, r.Max = min(r.Min, q), max(r.Max, q)
		}
		r.Median = median(rs)
		r.Met = target == 0 || r.Median <= target
		rows = append(rows, r)
	}
	add("push of go (2.4 GB), in the cache", "imgcache push", "docker push", 0.25)
	add("get, empty cache and daemon", "get, empty host (pull + load)", "docker load -i, empty daemon", 1.10)
	add("same, against docker pull", "get, empty host (pull + load)", "docker pull, empty daemon", 0)
	fmt.Println("| figure | imgcache | alternative | ratio | spread | target | met |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- |")
	for _, r := range rows {
		t := "(info)"
		if r.Target > 0 {
			t = fmt.Sprintf("≤ %.2f×", r.Target)
		}
		fmt.Printf("| %s | %.2f s | %s %.2f s | %.2f× | %.2f–%.2f× | %s | %v |\n", r.Figure, r.AMed, r.B, r.BMed, r.Median, r.Min, r.Max, t, r.Met)
	}
	fmt.Printf("| registry storage | go %d B; go and jvm %d B (jvm added %d B; its own layer is %d B raw) | — | — | — | the base once | %v |\n",
		f.RegistryGo, f.RegistryBoth, f.RegistryBoth-f.RegistryGo, f.OwnLayer, f.RegistryBoth-f.RegistryGo < f.OwnLayer)
	fmt.Printf("| pull of jvm, go pulled | %d blobs, %d B fetched | its own layer %d B raw | — | — | its own blobs | %v |\n",
		f.SecondFetched, f.SecondBytes, f.OwnLayer, f.SecondFetched == 2 && f.SecondBytes < f.OwnLayer)
	if len(s["get of jvm, go pulled and loaded"]) > 0 {
		fmt.Printf("| get of jvm after that pull | %.2f s | — | — | — | (info) | — |\n", median(s["get of jvm, go pulled and loaded"]))
	}
	b, err := json.MarshalIndent(map[string]any{"version": version, "rows": rows, "facts": f, "samples": samples(s)}, "", "  ")
	if err != nil {
		return err
	}
	out := strings.TrimSuffix(*jsonOut, ".json")
	if strings.HasSuffix(out, "latest") {
		out = filepath.Join(filepath.Dir(out), "remote")
	}
	return os.WriteFile(out+".json", b, 0o644)
}
