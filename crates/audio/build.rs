//! Windows (mingw-w64) only: the bundled libopus is compiled with `-fstack-protector-strong` and
//! `_FORTIFY_SOURCE`, whose helpers (`__stack_chk_fail`, `__memset_chk`) mingw keeps in `libssp`.
//! Link its static archive, so that no `libssp-0.dll` has to ship beside the `.exe`.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "windows" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    // Where the target's gcc keeps libssp.a (…/gcc/x86_64-w64-mingw32/<version>/).
    let gcc = std::env::var("RUSTC_LINKER")
        .or_else(|_| std::env::var(format!("CC_{}", var("TARGET").replace('-', "_"))))
        .unwrap_or_else(|_| format!("{}-w64-mingw32-gcc", var("CARGO_CFG_TARGET_ARCH")));
    let out = std::process::Command::new(&gcc).arg("-print-file-name=libssp.a").output();
    let path = match out {
        Ok(o) if o.status.success() => std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => panic!("cannot ask {gcc} where libssp.a is: install mingw-w64 (scripts/setup.sh --windows)"),
    };
    let dir = path.parent().filter(|_| path.is_file()).unwrap_or_else(|| panic!("{gcc} has no libssp.a"));
    println!("cargo:rustc-link-search=native={}", dir.display());
    // Whole: the linker meets this archive before libopus' objects that need it (rustc orders
    // native libraries by crate), and picks nothing from an archive when nothing is missing yet.
    println!("cargo:rustc-link-lib=static:-bundle,+whole-archive=ssp");
}
