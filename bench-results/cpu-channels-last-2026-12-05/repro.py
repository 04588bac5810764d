import torch, sys
torch.set_num_threads(1)
from torch import nn
case = sys.argv[1]
x = torch.randn(32, 1, 128, 40, requires_grad=False)
if case == "conv1":
    m = nn.Conv2d(1, 8, 3, 1, padding=1, bias=False)
elif case == "conv8":
    m = nn.Conv2d(8, 8, 3, 1, padding=1, bias=False); x = torch.randn(32, 8, 128, 40)
elif case == "bn":
    m = nn.BatchNorm2d(8); x = torch.randn(32, 8, 128, 40)
elif case == "conv8s2":
    m = nn.Conv2d(8, 16, 3, 2, padding=1, bias=False); x = torch.randn(32, 8, 128, 40)
elif case == "conv1x1s2":
    m = nn.Conv2d(8, 16, 1, 2, bias=False); x = torch.randn(32, 8, 128, 40)
m = m.to(memory_format=torch.channels_last)
x = x.requires_grad_()
for i in range(3):
    y = m(x); y.float().sum().backward()
print(case, "ok")
