// swift-tools-version: 6.2
import Foundation
import PackageDescription

// The SONAME carries the major version of include/mlorc.h, the one place the
// version is written: libmlorc.so.MAJOR (scripts/install.sh installs it so).
let headerText = try! String(contentsOfFile: Context.packageDirectory + "/include/mlorc.h", encoding: .utf8)
guard let majorLine = headerText.split(separator: "\n").first(where: { $0.hasPrefix("#define MLORC_VERSION_MAJOR ") }),
      let major = Int(majorLine.split(separator: " ").last ?? "")
else { fatalError("include/mlorc.h has no '#define MLORC_VERSION_MAJOR N' line") }

// libmlorc: Swift core behind a hand-written C header (include/mlorc.h).
// - CMlorcHeader exposes that header to Swift so `@c @implementation` checks
//   every exported function against it at compile time.
// - CLinearAlgebra wraps Debian's OpenBLAS (cblas.h) and LAPACKE (lapacke.h).
// - CVectorMath holds the few vector intrinsics Swift's SIMD types lack.
// - CWideKernels holds AVX-512 kernels, used where the CPU has AVX-512.
// - MlorcCore holds the rules, storages, kernels and linear algebra (internal).
// - Mlorc is only the exported C functions; its .dynamic product is libmlorc.so,
//   linked with the Swift runtime statically and exporting only mlorc_*.
let package = Package(
    name: "libmlorc",
    products: [
        .library(name: "mlorc", type: .dynamic, targets: ["Mlorc"]),
    ],
    targets: [
        .systemLibrary(name: "CMlorcHeader", path: "Sources/CMlorcHeader"),
        .systemLibrary(name: "CLinearAlgebra", path: "Sources/CLinearAlgebra"),
        .systemLibrary(name: "CVectorMath", path: "Sources/CVectorMath"),
        // AVX-512 versions of the hottest kernels, chosen at run time (docs/architecture.md, "Wide kernels").
        // DWARF 4: the valgrind the failure tests run (Debian's 3.19) cannot read clang's DWARF 5.
        .target(name: "CWideKernels", path: "Sources/CWideKernels", cSettings: [.unsafeFlags(["-gdwarf-4"])]),
        .target(
            name: "MlorcCore",
            dependencies: ["CLinearAlgebra", "CVectorMath", "CWideKernels"],
            // The kernels are written for 256-bit SIMD with FMA (AVX2 + FMA, Haswell and later):
            // every machine this project targets has it (docs/architecture.md).
            swiftSettings: [.unsafeFlags(["-target-cpu", "haswell"])]
        ),
        .target(
            name: "Mlorc",
            dependencies: ["MlorcCore", "CMlorcHeader"],
            exclude: ["exports.map"],
            swiftSettings: [.enableExperimentalFeature("CImplementation")],
            linkerSettings: [
                .unsafeFlags([
                    "-static-stdlib",
                    // gold keeps local copies of Swift metadata in .dynsym; lld does not.
                    "-use-ld=lld",
                    "-Xlinker", "--version-script=Sources/Mlorc/exports.map",
                    "-Xlinker", "-soname=libmlorc.so.\(major)",
                ]),
            ]
        ),
        .testTarget(name: "MlorcCoreTests", dependencies: ["MlorcCore"]),
    ],
    swiftLanguageModes: [.v5]
)
