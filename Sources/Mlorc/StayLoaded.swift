import CMlorcHeader
#if canImport(Glibc)
import Glibc
#endif

/// libmlorc carries the Swift runtime (linked in statically), whose image
/// registrations and type-metadata caches cannot be released. Unmapped by
/// dlclose, the library would leave them behind unreachable (about 1.7 kB in
/// 14 blocks), and every later dlopen would add as much again. So
/// the library marks itself RTLD_NODELETE as it is loaded: dlclose keeps it
/// mapped, a later dlopen reuses it, and the runtime's caches stay reachable
/// and are made once per process.
@used @section(".init_array")
let stayLoaded: @convention(c) () -> Void = {
    let soname = cString("libmlorc.so")
    // RTLD_NOLOAD finds the loaded library by its soname; the symbol check
    // makes sure it is this copy, not another file of the same soname.
    guard let loaded = dlopen(soname, RTLD_NOW | RTLD_NOLOAD) else { return }
    let ours: @convention(c) () -> UInt32 = mlorc_version_number
    if dlsym(loaded, cString("mlorc_version_number")) == unsafeBitCast(ours, to: UnsafeMutableRawPointer.self) {
        _ = dlopen(soname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE)  // sets the flag; the reference is never dropped
    }
    dlclose(loaded)
}
