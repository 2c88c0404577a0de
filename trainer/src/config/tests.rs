use super::model::ModelConfig;
use super::presets::{preset, presets};

#[test]
fn released_models_match_the_paper_non_embedding_counts() {
    assert_eq!(
        preset("minicpm-1.2b").unwrap().model.non_embedding_params(),
        1_247_442_432
    );
    assert_eq!(
        preset("minicpm-2.4b").unwrap().model.non_embedding_params(),
        2_442_057_984
    );
}

#[test]
fn every_preset_is_valid_and_unknown_names_list_the_allowed() {
    for p in presets() {
        p.model
            .validate()
            .unwrap_or_else(|e| panic!("{}: {e}", p.name));
    }
    let e = preset("huge").unwrap_err().to_string();
    assert!(
        e.contains("\"huge\"") && e.contains("tiny") && e.contains("minicpm-2.4b"),
        "{e}"
    );
}

#[test]
fn shape_errors_name_the_values() {
    let mut m = ModelConfig::minicpm(100, 200, 3, 3, 2, 10);
    assert!(
        m.validate()
            .unwrap_err()
            .to_string()
            .contains("--hidden 100")
    );
    m = ModelConfig::minicpm(128, 200, 4, 3, 2, 10);
    assert!(
        m.validate()
            .unwrap_err()
            .to_string()
            .contains("--kv-heads 3")
    );
    m = ModelConfig::minicpm(96, 200, 32, 32, 2, 10);
    assert!(m.validate().unwrap_err().to_string().contains("odd"));
}

#[test]
fn hf_config_round_trips() {
    let m = preset("minicpm-1.2b").unwrap().model;
    let back = ModelConfig::from_hf_config_json(&m.hf_config_json(4096)).unwrap();
    assert_eq!(back, m);
}
