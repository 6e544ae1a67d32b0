"""The computational graph of one unrolled step, for TensorBoard's Graphs tab.

The unroll differentiates through ``torch.autograd.grad``, which a JIT trace cannot capture,
so this module writes the dataflow graph directly as a TensorBoard ``GraphDef`` whose nodes
are the pieces of the paper's Figure 2 with readable names:

    optimizee/theta_t -> optimizee/loss_f -> optimizee/gradient -> optimizer/preprocess
    -> optimizer/lstm/layer_k (with optimizer/phi/* weights and optimizer/state/*)
    -> optimizer/output -> unroll/theta_next -> meta/meta_loss -> meta/meta_gradient
    -> meta/<meta-optimizer> -> optimizer/phi_update (what updates phi)
"""

from __future__ import annotations

from dataclasses import dataclass

from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto.attr_value_pb2 import AttrValue
from tensorboard.compat.proto.graph_pb2 import GraphDef
from tensorboard.compat.proto.node_def_pb2 import NodeDef

from l2o.optimizers import CoordinatewiseLSTM, StepOptimizer


@dataclass(frozen=True)
class GraphSpec:
    """What the graph shows: the optimizer and how it is meta-trained."""

    optimizer: StepOptimizer
    task_name: str
    meta_optimizer: str
    meta_lr: float
    truncation: int
    second_order: bool


def _node(name: str, op: str, inputs: list[str], **attrs: str) -> NodeDef:
    return NodeDef(
        name=name,
        op=op,
        input=inputs,
        attr={k: AttrValue(s=v.encode()) for k, v in attrs.items()},
    )


def _running_average(nodes: list[NodeDef], name: str, op: str, state: str, description: str) -> str:
    """Append a per-coordinate running average of the gradient kept in the optimizer's state
    (its placeholder, then the node that updates it); returns the node's name."""
    nodes.append(_node(f"optimizer/state/{name}", "Placeholder", [], description=state))
    node = f"optimizer/{name}"
    inputs = ["optimizee/gradient", f"optimizer/state/{name}"]
    nodes.append(_node(node, op, inputs, description=description))
    return node


def build_graph(spec: GraphSpec) -> GraphDef:
    opt = spec.optimizer
    nodes = [
        _node("optimizee/theta_t", "Placeholder", [], description="parameters theta_t"),
        _node("optimizee/loss_f", spec.task_name, ["optimizee/theta_t"], description="f(theta_t)"),
        _node(
            "optimizee/gradient",
            "Gradient",
            ["optimizee/loss_f", "optimizee/theta_t"],
            description="grad_t = df/dtheta_t"
            + ("" if spec.second_order else " (treated as constant: no second derivatives)"),
        ),
    ]
    phi = []
    for name, p in opt.named_parameters():
        node_name = f"optimizer/phi/{name.replace('.', '_')}"
        phi.append(node_name)
        nodes.append(_node(node_name, "Variable", [], shape=str(tuple(p.shape))))
    if isinstance(opt, CoordinatewiseLSTM):
        c = opt.config
        signals = ["optimizee/gradient"]
        if c.momentum:
            description = f"bias-corrected running averages, decays {list(c.momentum)}"
            signals.append(_running_average(nodes, "momentum", "Momentum", "m_t", description))
        nodes.append(
            _node(
                "optimizer/preprocess",
                "LogSign" if c.preprocess == "log_sign" else "Identity",
                # param_input: theta_t is read too, preprocessed like the gradient
                [*signals, "optimizee/theta_t"] if c.param_input else signals,
                description=f"Appendix A, p = {c.p}" if c.preprocess == "log_sign" else "none",
            )
        )
        previous = ["optimizer/preprocess"]
        if c.rms_decay:
            description = f"bias-corrected RMS of the gradient, decay {c.rms_decay}"
            rms = _running_average(nodes, "rms", "RMS", "v_t", description)
            nodes.append(
                _node(
                    "optimizer/rms_scaled",
                    "Div",
                    [*signals, rms],
                    description="the signals divided by the RMS (as in Adam's m / sqrt(v))",
                )
            )
            previous.append("optimizer/rms_scaled")
        if c.time_scales:
            nodes.append(_node("optimizer/state/step", "Placeholder", [], description="t"))
            description = f"tanh(t / s), s in {list(c.time_scales)}, into the first layer's gates"
            nodes.append(
                _node(
                    "optimizer/step_features",
                    "Tanh",
                    ["optimizer/state/step"],
                    description=description,
                )
            )
            previous.append("optimizer/step_features")
        for k in range(c.num_layers):
            nodes.append(_node(f"optimizer/state/h_{k}", "Placeholder", [], description="h_t"))
            nodes.append(_node(f"optimizer/state/c_{k}", "Placeholder", [], description="c_t"))
            weights = [n for n in phi if n.startswith(f"optimizer/phi/cells_{k}_")]
            if k == 0:
                weights += [n for n in phi if n.startswith("optimizer/phi/time_")]
            nodes.append(
                _node(
                    f"optimizer/lstm/layer_{k}",
                    "LSTMCell",
                    [*previous, f"optimizer/state/h_{k}", f"optimizer/state/c_{k}", *weights],
                    hidden_size=str(c.hidden_size),
                )
            )
            previous = [f"optimizer/lstm/layer_{k}"]
        output_weights = [n for n in phi if n.startswith("optimizer/phi/output_")]
        description = f"g_t = {c.output_scale} * (W h_t + b)"
        if opt.gain is not None:  # the linear term reads the signals themselves
            output_weights += [n for n in phi if n.startswith("optimizer/phi/gain_")]
            previous += [signals[j] for j in c.gain_signals if j < len(signals)]
            if any(j >= len(signals) for j in c.gain_signals):
                previous.append("optimizer/rms_scaled")
            description += " - sum_j exp(A_j h_t + c_j) s_j over the signals s_j it reads"
        nodes.append(
            _node(
                "optimizer/output", "Linear", [*previous, *output_weights], description=description
            )
        )
    else:
        reads = ["optimizee/gradient"] + (["optimizee/theta_t"] if opt.reads_params else [])
        nodes.append(_node("optimizer/output", type(opt).__name__, [*reads, *phi]))
    nodes += [
        _node(
            "unroll/theta_next",
            "Add",
            ["optimizee/theta_t", "optimizer/output"],
            description="theta_{t+1} = theta_t + g_t",
        ),
        _node(
            "meta/meta_loss",
            "WeightedSum",
            ["unroll/theta_next"],
            description=f"L(phi) = sum_t w_t f(theta_t) over {spec.truncation} steps",
        ),
        _node("meta/meta_gradient", "TruncatedBPTT", ["meta/meta_loss"]),
        _node(
            f"meta/{spec.meta_optimizer}",
            spec.meta_optimizer.capitalize(),
            ["meta/meta_gradient"],
            lr=f"{spec.meta_lr:g}",
        ),
        _node(
            "optimizer/phi_update",
            "AssignAdd",
            [*phi, f"meta/{spec.meta_optimizer}"],
            description=f"phi <- phi + {spec.meta_optimizer}(dL/dphi)",
        ),
    ]
    return GraphDef(node=nodes)


def write_graph(writer, spec: GraphSpec) -> None:
    """Add the graph to a ``torch.utils.tensorboard.SummaryWriter``'s event file."""
    event = event_pb2.Event(graph_def=build_graph(spec).SerializeToString())
    writer._get_file_writer().add_event(event)
