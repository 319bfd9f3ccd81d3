// Package blobs is a content-addressed blob store on disk: global models
// and updates live in files named by the SHA-256 of their bytes, out of
// memory and out of the raft log.
//
// A [Store] ([Open]) keeps each blob at dir/sha256/ab/abcdef… (the first
// two hex digits fan the files out). A [Writer] ([Store.Create]) streams a
// blob in, hashing as it writes, into a temporary file under dir/tmp;
// [Writer.Commit] checks the digest, fsyncs the file and renames it into
// place, so a blob is either whole under its name or absent: a crash
// mid-write leaves only a temporary file, which the next [Open] removes.
// A digest mismatch, a cancelled context or a disk about to fill
// ([ErrNoSpace], checked against [Options.MinFree] before and while
// writing) leaves the store as it was. Writing the same content twice, even
// at once, stores one blob and both commits succeed.
//
// [Store.Open] streams a blob back from its file. [Store.Collect] removes
// the blobs a caller no longer references, once they are older than
// [Options.Grace], and temporary files orphaned by writers that never
// committed. [Store.Verify] rehashes a blob to catch corruption on disk.
//
// There is no in-memory cache of blob bytes: reads stream from the file,
// and the kernel's page cache keeps hot blobs in memory, sized by what the
// machine has free rather than by a knob here (BenchmarkWriteRead measures
// reads against os.ReadFile of the same bytes).
//
// One Store owns its directory: two processes must not open the same
// directory, since Open removes temporary files it finds there.
package blobs
