//! Without a GPU adapter, `--backend wgpu` is a one-line error before anything is loaded (burn
//! itself would panic at the first tensor). Hides every Vulkan driver from the loader, so Linux only.

#![cfg(all(feature = "wgpu", target_os = "linux"))]

#[test]
fn no_adapter_is_a_one_line_error() {
    // SAFETY: this test binary has one test and nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("VK_ICD_FILENAMES", "/nonexistent/icd.json");
        std::env::set_var("VK_DRIVER_FILES", "/nonexistent/icd.json");
    }
    let err = decode_models::backend::wgpu_device()
        .expect_err("no Vulkan driver is visible")
        .to_string();
    assert!(err.contains("no GPU adapter found"), "{err}");
    assert!(err.contains("mesa-vulkan-drivers"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}
