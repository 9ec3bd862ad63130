#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pare::fuzzing::scripts(data);
});
