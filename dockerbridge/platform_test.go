package dockerbridge

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBinfmtHandler(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if ok, why, err := binfmtHandler(dir, "riscv64"); ok || err != nil || !strings.Contains(why, "not mounted") {
		t.Errorf("no binfmt_misc: %v %q %v", ok, why, err)
	}
	write("status", "enabled\n")
	write("register", "")
	if ok, why, err := binfmtHandler(dir, "riscv64"); ok || err != nil || !strings.Contains(why, "qemu-user-static") {
		t.Errorf("no handler: %v %q %v", ok, why, err)
	}
	write("qemu-riscv64", "enabled\ninterpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P\nflags: PF\n")
	write("qemu-aarch64", "disabled\ninterpreter /usr/bin/qemu-aarch64-static\n")
	if ok, why, err := binfmtHandler(dir, "riscv64"); !ok || err != nil {
		t.Errorf("an enabled handler: %v %q %v", ok, why, err)
	}
	if ok, why, _ := binfmtHandler(dir, "arm64"); ok || !strings.Contains(why, "qemu-aarch64 is disabled") {
		t.Errorf("arm64 with a disabled qemu-aarch64: %v %q", ok, why)
	}
	for arch, want := range map[string]string{"amd64": "x86_64", "arm64": "aarch64", "386": "i386", "riscv64": "riscv64", "ppc64le": "ppc64le", "mips64le": "mips64el"} {
		if got := qemuArch(arch); got != want {
			t.Errorf("qemuArch(%s) = %s, want %s", arch, got, want)
		}
	}
}
