"""Mixture controllers: data hooks (cpt.train.hooks) that change the stream shares during training.

    topic_ppl         TopicPPLMixture   the Llama-3-SynE rule: more share to topics whose validation PPL rises
    static            StaticMixture     fixed weights for a stage
    schedule          ScheduleMixture   weights interpolated in consumed tokens
    exp3              EXP3Mixture       ODM's EXP3 online mixer (Albalak et al. 2023) on validation loss
    forgetting_guard  ForgettingGuard   raises the original-capability share when its PPL rises

Each is registered under its name in the entry-point group `cpt.data_hooks`, so a recipe names it as
`hooks: [{use: topic_ppl, options: {...}}]` or by import path `cpt.mixture.topic_ppl:TopicPPLMixture`.
"""
from cpt.mixture.exp3 import EXP3Mixture
from cpt.mixture.forgetting import ForgettingGuard
from cpt.mixture.schedule import ScheduleMixture
from cpt.mixture.static import StaticMixture
from cpt.mixture.topic_ppl import TopicPPLMixture

__all__ = ["EXP3Mixture", "ForgettingGuard", "ScheduleMixture", "StaticMixture", "TopicPPLMixture"]
