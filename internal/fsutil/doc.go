// Package fsutil holds the filesystem habits every imgcache package that
// writes shares, so each is done one way everywhere:
//
//   - creating files and directories with modes the umask decides
//     (FileMode, DirMode, CreateExcl, CreateTemp, MkdirAll, ReadOnly);
//   - replacing a file atomically and durably (WriteAtomic), or, for a
//     file the user names, atomically and durably if asked (WriteOutput),
//     and fsyncing a
//     directory after a rename or unlink (SyncDir);
//   - classifying a full filesystem as errdefs.ErrNoSpace (Classify);
//   - reading free space (FreeBytes), mapping a file read-only
//     (MapReadOnly) and starting writeback early (Writeback), with
//     fallbacks where the system lacks them.
package fsutil
